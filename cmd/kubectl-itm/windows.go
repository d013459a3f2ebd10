package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/schedule"
)

// WindowsReport is what `kubectl itm windows -o json|yaml` prints.
type WindowsReport struct {
	// At is the instant "open" and "next" refer to.
	At      time.Time      `json:"at"`
	Windows []WindowReport `json:"windows"`
}

// WindowReport is one MaintenanceWindow as the schedule engine sees it.
type WindowReport struct {
	Name string `json:"name"`
	// TimeZone is the window's IANA zone (UTC when unset).
	TimeZone string `json:"timeZone"`
	// Error is set, and the schedule fields are empty, when the window's
	// schedule does not parse.
	Error      string `json:"error,omitempty"`
	Open       bool   `json:"open"`
	InBlackout bool   `json:"inBlackout"`
	Paused     bool   `json:"paused"`
	// Next is the next opening (absent: it never opens again).
	Next    *Opening        `json:"next,omitempty"`
	Devices UpgradeProgress `json:"devices"`
}

// Opening is one opening of a window; Start and End are instants (RFC
// 3339, UTC); BlackoutUntil is set when it starts inside a blackout.
type Opening struct {
	Start         time.Time  `json:"start"`
	End           time.Time  `json:"end"`
	Duration      string     `json:"duration"`
	BlackoutUntil *time.Time `json:"blackoutUntil,omitempty"`
}

// UpgradeProgress counts the window's devices by upgrade state.
type UpgradeProgress struct {
	Succeeded  int32 `json:"succeeded"`
	InProgress int32 `json:"inProgress"`
	Failed     int32 `json:"failed"`
	Pending    int32 `json:"pending"`
}

func windowsReport(ctx context.Context, c client.Client, now time.Time) (*WindowsReport, error) {
	list := &itmv1.MaintenanceWindowList{}
	if err := c.List(ctx, list); err != nil {
		return nil, fmt.Errorf("list MaintenanceWindows: %w", err)
	}
	rep := &WindowsReport{At: now.UTC(), Windows: []WindowReport{}}
	for _, mw := range list.Items {
		w := WindowReport{Name: mw.Name, TimeZone: mw.Spec.TimeZone, Paused: mw.Spec.Paused}
		if w.TimeZone == "" {
			w.TimeZone = "UTC"
		}
		d := mw.Status.Devices
		w.Devices = UpgradeProgress{Succeeded: d.Succeeded, InProgress: d.InProgress, Failed: d.Failed, Pending: d.Pending}
		s, err := schedule.New(&mw.Spec)
		if err != nil {
			w.Error = err.Error()
			rep.Windows = append(rep.Windows, w)
			continue
		}
		v := s.At(now)
		w.Open, w.InBlackout = v.Open, v.InBlackout
		if v.HasNext {
			w.Next = opening(s, v.Next.Start, v.Next.End)
		}
		rep.Windows = append(rep.Windows, w)
	}
	return rep, nil
}

func opening(s *schedule.Schedule, start, end time.Time) *Opening {
	o := &Opening{Start: start.UTC(), End: end.UTC(), Duration: end.Sub(start).String()}
	if b, black := s.Blackout(start); black {
		until := b.End.UTC()
		o.BlackoutUntil = &until
	}
	return o
}

// windows lists every MaintenanceWindow with whether it is open and its
// next opening, in the window's own zone, the local zone and UTC, computed
// with the operator's schedule engine.
func windows(ctx context.Context, c client.Client, now time.Time, local *time.Location, out io.Writer) error {
	rep, err := windowsReport(ctx, c, now)
	if err != nil {
		return err
	}
	return printWindows(rep, local, out)
}

func printWindows(rep *WindowsReport, local *time.Location, out io.Writer) error {
	tw := newTable(out)
	fmt.Fprintln(tw, "NAME\tZONE\tOPEN\tNEXT OPENING (WINDOW ZONE)\tLOCAL\tUTC\tPROGRESS")
	for _, w := range rep.Windows {
		progress := fmt.Sprintf("%d done, %d running, %d failed, %d pending", w.Devices.Succeeded, w.Devices.InProgress, w.Devices.Failed, w.Devices.Pending)
		if w.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tinvalid: %s\t<none>\t<none>\t<none>\t%s\n", w.Name, w.TimeZone, w.Error, progress)
			continue
		}
		open := "no"
		if w.Open {
			open = "yes"
		} else if w.InBlackout {
			open = "blackout"
		}
		if w.Paused {
			open += " (paused)"
		}
		nextIn, nextLocal, nextUTC := "never", "<none>", "<none>"
		if w.Next != nil {
			loc, err := time.LoadLocation(w.TimeZone)
			if err != nil {
				loc = time.UTC
			}
			nextIn = stampIn(w.Next.Start, loc)
			nextLocal = stampIn(w.Next.Start, local)
			nextUTC = stampIn(w.Next.Start, time.UTC)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", w.Name, w.TimeZone, open, nextIn, nextLocal, nextUTC, progress)
	}
	return tw.Flush()
}

// ScheduleReport is what `kubectl itm schedule -o json|yaml` prints.
type ScheduleReport struct {
	Window   string    `json:"window"`
	TimeZone string    `json:"timeZone"`
	At       time.Time `json:"at"`
	// Openings are the next openings in order (fewer than asked when the
	// window stops opening).
	Openings []Opening `json:"openings"`
}

func scheduleReport(ctx context.Context, c client.Client, name string, n int, now time.Time) (*ScheduleReport, *schedule.Schedule, error) {
	mw := &itmv1.MaintenanceWindow{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, mw); err != nil {
		return nil, nil, fmt.Errorf("get MaintenanceWindow %s: %w", name, err)
	}
	s, err := schedule.New(&mw.Spec)
	if err != nil {
		return nil, nil, err
	}
	rep := &ScheduleReport{Window: mw.Name, TimeZone: s.Loc.String(), At: now.UTC(), Openings: []Opening{}}
	at := now
	for range n {
		next, ok := s.Next(at)
		if !ok {
			break
		}
		rep.Openings = append(rep.Openings, *opening(s, next.Start, next.End))
		at = next.Start
	}
	return rep, s, nil
}

// scheduleOf prints the next n openings of one window, each with its end,
// in the window's zone, the local zone and UTC, marking blackouts.
func scheduleOf(ctx context.Context, c client.Client, name string, n int, now time.Time, local *time.Location, out io.Writer) error {
	rep, s, err := scheduleReport(ctx, c, name, n, now)
	if err != nil {
		return err
	}
	return printSchedule(rep, s.Loc, n, local, out)
}

func printSchedule(rep *ScheduleReport, loc *time.Location, n int, local *time.Location, out io.Writer) error {
	fmt.Fprintf(out, "MaintenanceWindow %s, time zone %s; now %s\n\n", rep.Window, rep.TimeZone, stampIn(rep.At, loc))
	tw := newTable(out)
	fmt.Fprintln(tw, "#\tOPENS (WINDOW ZONE)\tCLOSES\tLENGTH\tLOCAL\tUTC\tNOTE")
	for i, o := range rep.Openings {
		note := "<none>"
		if o.BlackoutUntil != nil {
			note = "starts in a blackout until " + stampIn(*o.BlackoutUntil, loc)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, stampIn(o.Start, loc), stampIn(o.End, loc),
			o.Duration, stampIn(o.Start, local), stampIn(o.Start, time.UTC), note)
	}
	if len(rep.Openings) < n {
		fmt.Fprintf(tw, "%d\tnever\t<none>\t<none>\t<none>\t<none>\t<none>\n", len(rep.Openings)+1)
	}
	return tw.Flush()
}

func stampIn(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-01-02 15:04 MST")
}
