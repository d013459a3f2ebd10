package schedule

import (
	"fmt"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// horizon bounds every search for a next occurrence: a cron that selects
// only 29 February still fires within 8 years; one that never fires (31
// April) must not loop forever.
const horizon = 10 * 366 * 24 * time.Hour

// zoneSlack is more than any single shift of a zone's UTC offset (DST
// moves it by one hour, Lord Howe by half an hour).
const zoneSlack = 3 * time.Hour

// maxMerge bounds how many back-to-back occurrences are merged into one
// interval (a window that reopens before it closes, such as "every minute,
// for an hour", never ends). The End of such a window is then where the
// merging stopped: not a real boundary, only an instant to look again.
const maxMerge = 16

// Interval is a half-open interval [Start, End).
type Interval struct{ Start, End time.Time }

// Contains reports whether t lies in [Start, End).
func (i Interval) Contains(t time.Time) bool { return !t.Before(i.Start) && t.Before(i.End) }

// Recurring is a cron schedule whose every start opens an interval of
// Duration (elapsed time).
type Recurring struct {
	Cron     Cron
	Duration time.Duration
}

// Schedule is a MaintenanceWindow's timing: its windows and blackouts in one
// time zone, and the start cutoff. Every method takes the instant to decide
// for; nothing reads a clock.
type Schedule struct {
	Loc         *time.Location
	Windows     []Recurring
	Blackouts   []Recurring
	Fixed       []Interval // fixed blackouts
	StartCutoff time.Duration
}

// New compiles a MaintenanceWindow spec. Errors name the field.
func New(spec *itmv1.MaintenanceWindowSpec) (*Schedule, error) {
	tz := spec.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := LoadTimeZone(tz)
	if err != nil {
		return nil, fmt.Errorf("spec.timeZone: %w", err)
	}
	s := &Schedule{Loc: loc}
	if spec.StartCutoff != nil {
		s.StartCutoff = spec.StartCutoff.Duration
	}
	for i, w := range spec.Windows {
		c, err := ParseCron(w.Schedule)
		if err != nil {
			return nil, fmt.Errorf("spec.windows[%d].schedule: %w", i, err)
		}
		if w.Duration.Duration <= 0 {
			return nil, fmt.Errorf("spec.windows[%d].duration: must be positive", i)
		}
		s.Windows = append(s.Windows, Recurring{Cron: c, Duration: w.Duration.Duration})
	}
	for i, b := range spec.Blackouts {
		switch {
		case b.Start != nil && b.End != nil:
			s.Fixed = append(s.Fixed, Interval{Start: b.Start.Time, End: b.End.Time})
		case b.Schedule != "" && b.Duration != nil:
			c, err := ParseCron(b.Schedule)
			if err != nil {
				return nil, fmt.Errorf("spec.blackouts[%d].schedule: %w", i, err)
			}
			s.Blackouts = append(s.Blackouts, Recurring{Cron: c, Duration: b.Duration.Duration})
		default:
			return nil, fmt.Errorf("spec.blackouts[%d]: set either start and end, or schedule and duration", i)
		}
	}
	return s, nil
}

// Starts calls yield with every start of the cron in loc within [from, to),
// ascending, each instant once. Wall-clock times are resolved as the
// contract says: a start in a spring-forward gap runs at the first instant
// after the gap; a start in a repeated fall-back hour runs once, at its
// first occurrence. It stops when yield returns false.
func (c Cron) Starts(loc *time.Location, from, to time.Time, yield func(time.Time) bool) {
	if !from.Before(to) {
		return
	}
	// A wall-clock time resolves at most a few hours away from its nominal
	// UTC reading; a day of margin on both sides covers every zone.
	date := func(t time.Time) time.Time {
		t = t.In(loc)
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	firstDay, lastDay := date(from).AddDate(0, 0, -1), date(to).AddDate(0, 0, 1)
	// Wall-clock readings of from and to as if in UTC: a wall time more
	// than zoneSlack outside them cannot resolve into [from, to) (no zone
	// shifts its offset by that much at once), so it is not resolved at all.
	nominal := func(t time.Time) time.Time {
		w := t.In(loc)
		return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), time.UTC)
	}
	fromWall, toWall := nominal(from), nominal(to)
	var prev time.Time
	for day := firstDay; !day.After(lastDay); day = day.AddDate(0, 0, 1) {
		if c.DayOfMonth&(1<<uint(day.Day())) == 0 || c.Month&(1<<uint(day.Month())) == 0 || c.DayOfWeek&(1<<uint(day.Weekday())) == 0 {
			continue
		}
		for h := range 24 {
			if c.Hour&(1<<uint(h)) == 0 {
				continue
			}
			if time.Date(day.Year(), day.Month(), day.Day(), h, 59, 0, 0, time.UTC).Add(zoneSlack).Before(fromWall) {
				continue
			}
			if !time.Date(day.Year(), day.Month(), day.Day(), h, 0, 0, 0, time.UTC).Add(-zoneSlack).Before(toWall) {
				return
			}
			for m := range 60 {
				if c.Minute&(1<<uint(m)) == 0 {
					continue
				}
				if time.Date(day.Year(), day.Month(), day.Day(), h, m, 0, 0, time.UTC).Add(zoneSlack).Before(fromWall) {
					continue
				}
				t := Resolve(day.Year(), day.Month(), day.Day(), h, m, loc)
				if t.Equal(prev) || t.Before(from) {
					continue
				}
				if !t.Before(to) {
					return
				}
				prev = t
				if !yield(t) {
					return
				}
			}
		}
	}
}

// Resolve turns a wall-clock minute in loc into an instant: the first
// occurrence when the wall time repeats (fall back), and the first instant
// after the gap when it does not exist (spring forward).
func Resolve(year int, month time.Month, day, hour, minute int, loc *time.Location) time.Time {
	wall := time.Date(year, month, day, hour, minute, 0, 0, time.UTC)
	_, before := wall.Add(-36 * time.Hour).In(loc).Zone()
	_, after := wall.Add(36 * time.Hour).In(loc).Zone()
	var found time.Time
	for _, off := range []int{before, after} {
		t := wall.Add(-time.Duration(off) * time.Second).In(loc)
		if t.Year() == year && t.Month() == month && t.Day() == day && t.Hour() == hour && t.Minute() == minute {
			if found.IsZero() || t.Before(found) {
				found = t
			}
		}
	}
	if !found.IsZero() {
		return found
	}
	// In the gap: read with the offset before the jump, the instant already
	// lies after the transition, whose start is the first instant after the gap.
	start, _ := wall.Add(-time.Duration(before) * time.Second).In(loc).ZoneBounds()
	return start
}

// containing is the occurrence of r that contains t with the latest start
// (hence the latest end), and the earliest start of any occurrence that
// contains t.
func (r Recurring) containing(loc *time.Location, t time.Time) (Interval, bool) {
	var iv Interval
	ok := false
	r.Cron.Starts(loc, t.Add(-r.Duration).Add(time.Nanosecond), t.Add(time.Nanosecond), func(s time.Time) bool {
		if !ok {
			iv.Start = s
		}
		iv.End = s.Add(r.Duration)
		ok = true
		return true
	})
	return iv, ok
}

// nextStart is the first start of r strictly after t.
func (r Recurring) nextStart(loc *time.Location, t time.Time) (time.Time, bool) {
	var out time.Time
	r.Cron.Starts(loc, t.Add(time.Nanosecond), t.Add(horizon), func(s time.Time) bool {
		out = s
		return false
	})
	return out, !out.IsZero()
}

// at is the union of the occurrences of rs (and fixed) that contain t,
// extended over occurrences that continue it without a gap.
func at(loc *time.Location, rs []Recurring, fixed []Interval, t time.Time) (Interval, bool) {
	hit := func(t time.Time) (Interval, bool) {
		var iv Interval
		ok := false
		for _, r := range rs {
			if o, found := r.containing(loc, t); found {
				iv, ok = widen(iv, o, ok), true
			}
		}
		for _, f := range fixed {
			if f.Contains(t) {
				iv, ok = widen(iv, f, ok), true
			}
		}
		return iv, ok
	}
	iv, ok := hit(t)
	if !ok {
		return Interval{}, false
	}
	for range maxMerge {
		next, found := hit(iv.End)
		if !found || !next.End.After(iv.End) {
			break
		}
		iv.End = next.End
	}
	return iv, true
}

func widen(iv, o Interval, ok bool) Interval {
	if !ok {
		return o
	}
	if o.Start.Before(iv.Start) {
		iv.Start = o.Start
	}
	if o.End.After(iv.End) {
		iv.End = o.End
	}
	return iv
}

// Current is the window that contains now, blackouts aside: overlapping
// and back-to-back occurrences count as one.
func (s *Schedule) Current(now time.Time) (Interval, bool) {
	return at(s.Loc, s.Windows, nil, now)
}

// Blackout is the blackout that contains now.
func (s *Schedule) Blackout(now time.Time) (Interval, bool) {
	return at(s.Loc, s.Blackouts, s.Fixed, now)
}

// Verdict is everything a schedule says about one instant, each part
// computed once.
type Verdict struct {
	// Current is the window containing the instant (InWindow), blackouts aside.
	Current  Interval
	InWindow bool
	// Blackout is the blackout containing the instant (InBlackout).
	Blackout   Interval
	InBlackout bool
	// Open: in a window and in no blackout (blackouts always win).
	Open bool
	// CanStart: Open, and more than StartCutoff remains of the window.
	CanStart bool
	// Next is the first window opening after the current one (or after the
	// instant, outside any window); HasNext is false when none ever does.
	Next    Interval
	HasNext bool
	// NextBoundary is the first later instant at which Open or CanStart may
	// change: a window opening or closing, its start cutoff, a blackout
	// beginning or ending. Zero when nothing will ever change.
	NextBoundary time.Time
}

// At decides the instant now.
func (s *Schedule) At(now time.Time) Verdict {
	var v Verdict
	v.Current, v.InWindow = s.Current(now)
	v.Blackout, v.InBlackout = s.Blackout(now)
	v.Open = v.InWindow && !v.InBlackout
	v.CanStart = v.Open && now.Before(v.Current.End.Add(-s.StartCutoff))

	consider := func(t time.Time) {
		if t.After(now) && (v.NextBoundary.IsZero() || t.Before(v.NextBoundary)) {
			v.NextBoundary = t
		}
	}
	from := now
	if v.InWindow {
		consider(v.Current.End)
		consider(v.Current.End.Add(-s.StartCutoff))
		// Openings inside the current (merged) window change nothing.
		from = v.Current.End.Add(-time.Nanosecond)
	}
	if v.Next, v.HasNext = s.Next(from); v.HasNext {
		consider(v.Next.Start)
	}
	if v.InBlackout {
		consider(v.Blackout.End)
	}
	for _, r := range s.Blackouts {
		if t, ok := r.nextStart(s.Loc, now); ok {
			consider(t)
		}
	}
	for _, f := range s.Fixed {
		consider(f.Start)
		consider(f.End)
	}
	return v
}

// Open reports whether changes may happen at now.
func (s *Schedule) Open(now time.Time) bool { return s.At(now).Open }

// CanStart reports whether a new device may start at now.
func (s *Schedule) CanStart(now time.Time) bool { return s.At(now).CanStart }

// NextBoundary is At(now).NextBoundary.
func (s *Schedule) NextBoundary(now time.Time) time.Time { return s.At(now).NextBoundary }

// Next is the first window that starts strictly after now.
func (s *Schedule) Next(now time.Time) (Interval, bool) {
	var start time.Time
	for _, r := range s.Windows {
		if t, ok := r.nextStart(s.Loc, now); ok && (start.IsZero() || t.Before(start)) {
			start = t
		}
	}
	if start.IsZero() {
		return Interval{}, false
	}
	iv, _ := s.Current(start)
	return Interval{Start: start, End: iv.End}, true
}
