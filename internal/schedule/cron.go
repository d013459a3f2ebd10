// Package schedule parses the 5-field cron expressions and IANA time zones of
// MaintenanceWindows. It is pure: no clock, no I/O.
package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed 5-field cron expression: minute, hour, day of month,
// month and day of week. Each field is a bit set of the values it allows.
type Cron struct {
	Minute, Hour, DayOfMonth, Month, DayOfWeek uint64
}

type field struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
	weekdayNames = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

	fields = [5]field{
		{name: "minute", min: 0, max: 59},
		{name: "hour", min: 0, max: 23},
		{name: "day-of-month", min: 1, max: 31},
		{name: "month", min: 1, max: 12, names: monthNames},
		// 7 is accepted as Sunday, as in Vixie cron, and folded onto 0.
		{name: "day-of-week", min: 0, max: 7, names: weekdayNames},
	}
)

// ParseCron parses a 5-field cron expression. Lists (1,2), ranges (1-5),
// steps (*/15, 1-30/5, 10/5) and English month and weekday names (JAN, MON)
// are accepted. Descriptors (@daily), seconds, and the non-standard L, W, #
// and ? are not. Restricting both day-of-month and day-of-week is rejected,
// because cron then runs when EITHER matches, which nobody expects of a
// maintenance window.
func ParseCron(expr string) (Cron, error) {
	parts := strings.Fields(expr)
	if len(parts) != 5 {
		return Cron{}, fmt.Errorf("must have 5 fields (minute hour day-of-month month day-of-week), found %d", len(parts))
	}
	var sets [5]uint64
	for i, p := range parts {
		set, err := parseField(p, fields[i])
		if err != nil {
			return Cron{}, fmt.Errorf("%s field %q: %w", fields[i].name, p, err)
		}
		sets[i] = set
	}
	// Sunday may be written 0 or 7.
	if sets[4]&(1<<7) != 0 {
		sets[4] = sets[4]&^(1<<7) | 1
	}
	c := Cron{Minute: sets[0], Hour: sets[1], DayOfMonth: sets[2], Month: sets[3], DayOfWeek: sets[4]}
	if c.restrictsDayOfMonth() && c.restrictsDayOfWeek() {
		return Cron{}, fmt.Errorf("day-of-month %q and day-of-week %q are both restricted; cron would run when either matches, so restrict only one and use * for the other", parts[2], parts[4])
	}
	return c, nil
}

func parseField(s string, f field) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			return 0, fmt.Errorf("empty list item")
		}
		rng, stepStr, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepStr)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q must be a positive integer", stepStr)
			}
			step = n
		}
		lo, hi := f.min, f.max
		switch rng {
		case "*":
			if f.name == "day-of-week" {
				hi = 6 // * covers Sunday once, as 0
			}
		default:
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			switch {
			case isRange:
				if hi, err = f.value(b); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, fmt.Errorf("range %q ends before it starts", rng)
				}
			case !hasStep:
				hi = lo
			}
		}
		if hasStep && step > f.max-f.min {
			return 0, fmt.Errorf("step %d is larger than the field's range %d-%d", step, f.min, f.max)
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

func (f field) value(s string) (int, error) {
	if n, ok := f.names[strings.ToLower(s)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, fmt.Errorf("%q is neither a number in %d-%d nor a name", s, f.min, f.max)
		}
		return 0, fmt.Errorf("%q is not a number in %d-%d", s, f.min, f.max)
	}
	if n < f.min || n > f.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", n, f.min, f.max)
	}
	return n, nil
}

func bits(lo, hi int) uint64 {
	var s uint64
	for v := lo; v <= hi; v++ {
		s |= 1 << uint(v)
	}
	return s
}

func (c Cron) restrictsDayOfMonth() bool { return c.DayOfMonth != bits(1, 31) }
func (c Cron) restrictsDayOfWeek() bool  { return c.DayOfWeek != bits(0, 6) }

// Matches reports whether the wall-clock minute of t (in t's location) is
// one the expression selects.
func (c Cron) Matches(t time.Time) bool {
	return c.Minute&(1<<uint(t.Minute())) != 0 &&
		c.Hour&(1<<uint(t.Hour())) != 0 &&
		c.DayOfMonth&(1<<uint(t.Day())) != 0 &&
		c.Month&(1<<uint(t.Month())) != 0 &&
		c.DayOfWeek&(1<<uint(t.Weekday())) != 0
}

// LoadTimeZone resolves an IANA time zone name such as "Europe/Berlin".
// "Local" and the empty name are refused: a window must not depend on the
// machine the operator happens to run on.
func LoadTimeZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("%q is not an IANA time zone name", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown IANA time zone %q", name)
	}
	return loc, nil
}
