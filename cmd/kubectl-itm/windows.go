package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/schedule"
)

// windows lists every MaintenanceWindow with whether it is open and its
// next opening, in the window's own zone, the local zone and UTC, computed
// with the operator's schedule engine.
func windows(ctx context.Context, c client.Client, now time.Time, local *time.Location, out io.Writer) error {
	list := &itmv1.MaintenanceWindowList{}
	if err := c.List(ctx, list); err != nil {
		return fmt.Errorf("list MaintenanceWindows: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tZONE\tOPEN\tNEXT OPENING (WINDOW ZONE)\tLOCAL\tUTC\tPROGRESS")
	for _, mw := range list.Items {
		zone := mw.Spec.TimeZone
		if zone == "" {
			zone = "UTC"
		}
		s, err := schedule.New(&mw.Spec)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%s\tinvalid: %v\t\t\t\t\n", mw.Name, zone, err)
			continue
		}
		v := s.At(now)
		open := "no"
		if v.Open {
			open = "yes"
		} else if v.InBlackout {
			open = "blackout"
		}
		if mw.Spec.Paused {
			open += " (paused)"
		}
		nextIn, nextLocal, nextUTC := "never", "", ""
		if v.HasNext {
			nextIn = stampIn(v.Next.Start, s.Loc)
			nextLocal = stampIn(v.Next.Start, local)
			nextUTC = stampIn(v.Next.Start, time.UTC)
		}
		d := mw.Status.Devices
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d done, %d running, %d failed, %d pending\n",
			mw.Name, zone, open, nextIn, nextLocal, nextUTC, d.Succeeded, d.InProgress, d.Failed, d.Pending)
	}
	return tw.Flush()
}

// scheduleOf prints the next n openings of one window, each with its end,
// in the window's zone, the local zone and UTC, marking blackouts.
func scheduleOf(ctx context.Context, c client.Client, name string, n int, now time.Time, local *time.Location, out io.Writer) error {
	mw := &itmv1.MaintenanceWindow{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, mw); err != nil {
		return fmt.Errorf("get MaintenanceWindow %s: %w", name, err)
	}
	s, err := schedule.New(&mw.Spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "MaintenanceWindow %s, time zone %s; now %s\n\n", mw.Name, s.Loc, stampIn(now, s.Loc))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tOPENS (WINDOW ZONE)\tCLOSES\tLENGTH\tLOCAL\tUTC\tNOTE")
	at := now
	for i := 1; i <= n; i++ {
		next, ok := s.Next(at)
		if !ok {
			fmt.Fprintf(tw, "%d\tnever\t\t\t\t\t\n", i)
			break
		}
		note := ""
		if b, black := s.Blackout(next.Start); black {
			note = "starts in a blackout until " + stampIn(b.End, s.Loc)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i, stampIn(next.Start, s.Loc), stampIn(next.End, s.Loc),
			next.End.Sub(next.Start), stampIn(next.Start, local), stampIn(next.Start, time.UTC), note)
		at = next.Start
	}
	return tw.Flush()
}

func stampIn(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-01-02 15:04 MST")
}
