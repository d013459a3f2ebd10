package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestParseCronRejects(t *testing.T) {
	tests := map[string]struct {
		expr string
		want string
	}{
		"too few fields":           {"0 3 * *", "must have 5 fields"},
		"six fields (seconds)":     {"0 0 3 * * *", "must have 5 fields"},
		"descriptor":               {"@daily", "must have 5 fields"},
		"minute out of range":      {"60 3 * * *", "minute field \"60\": 60 is out of range 0-59"},
		"hour out of range":        {"0 24 * * *", "hour field"},
		"day of month zero":        {"0 3 0 * *", "day-of-month field \"0\": 0 is out of range 1-31"},
		"month 13":                 {"0 3 * 13 *", "month field"},
		"unknown month name":       {"0 3 * FOO *", "neither a number in 1-12 nor a name"},
		"weekday 8":                {"0 3 * * 8", "day-of-week field"},
		"unknown weekday":          {"0 3 * * FUNDAY", "day-of-week field"},
		"quartz question mark":     {"0 3 ? * MON", "day-of-month field \"?\""},
		"quartz L":                 {"0 3 L * *", "day-of-month field"},
		"quartz hash":              {"0 3 * * MON#2", "day-of-week field"},
		"zero step":                {"*/0 * * * *", "step \"0\" must be a positive integer"},
		"negative step":            {"*/-5 * * * *", "step"},
		"step larger than range":   {"*/61 * * * *", "step 61 is larger"},
		"backwards range":          {"0 5-3 * * *", "ends before it starts"},
		"empty list item":          {"0,,5 3 * * *", "empty list item"},
		"dom and dow restricted":   {"0 3 1 * MON", "both restricted"},
		"dom step and dow range":   {"0 3 */2 * 1-5", "both restricted"},
		"letters in minute":        {"a 3 * * *", "minute field \"a\": \"a\" is not a number"},
		"trailing range separator": {"0 3-* * * *", "hour field"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParseCron(tc.expr)
			if err == nil {
				t.Fatalf("ParseCron(%q) succeeded, want error containing %q", tc.expr, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseCron(%q) error = %q, want it to contain %q", tc.expr, err, tc.want)
			}
		})
	}
}

func TestParseCronAccepts(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := map[string]struct {
		expr     string
		match    []string
		notMatch []string
	}{
		"weekly saturday 02:00": {
			expr:     "0 2 * * SAT",
			match:    []string{"2026-11-21 02:00", "2026-11-28 02:00"},
			notMatch: []string{"2026-11-21 02:01", "2026-11-22 02:00", "2026-11-21 03:00"},
		},
		"sunday as 7": {
			expr:     "30 4 * * 7",
			match:    []string{"2026-11-22 04:30"},
			notMatch: []string{"2026-11-21 04:30"},
		},
		"weekday range with names, lower case": {
			expr:     "0 22 * * mon-fri",
			match:    []string{"2026-11-23 22:00", "2026-11-27 22:00"},
			notMatch: []string{"2026-11-22 22:00", "2026-11-28 22:00"},
		},
		"list, step and range": {
			expr:     "0,30 1-5/2 * * *",
			match:    []string{"2026-11-22 01:00", "2026-11-22 03:30", "2026-11-22 05:00"},
			notMatch: []string{"2026-11-22 02:00", "2026-11-22 01:15", "2026-11-22 06:00"},
		},
		"first of the month in march and september": {
			expr:     "0 3 1 MAR,SEP *",
			match:    []string{"2026-03-01 03:00", "2026-09-01 03:00"},
			notMatch: []string{"2026-04-01 03:00", "2026-03-02 03:00"},
		},
		"start with step": {
			expr:     "10/20 * * * *",
			match:    []string{"2026-11-22 07:10", "2026-11-22 07:30", "2026-11-22 07:50"},
			notMatch: []string{"2026-11-22 07:00", "2026-11-22 07:20"},
		},
		"full ranges count as unrestricted": {
			expr:  "0 3 1-31 * 0-7",
			match: []string{"2026-11-22 03:00", "2026-11-23 03:00"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ParseCron(tc.expr)
			if err != nil {
				t.Fatalf("ParseCron(%q): %v", tc.expr, err)
			}
			for _, s := range tc.match {
				if !c.Matches(at(s)) {
					t.Errorf("%q should match %s", tc.expr, s)
				}
			}
			for _, s := range tc.notMatch {
				if c.Matches(at(s)) {
					t.Errorf("%q should not match %s", tc.expr, s)
				}
			}
		})
	}
}

func TestLoadTimeZone(t *testing.T) {
	for _, name := range []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"} {
		if _, err := LoadTimeZone(name); err != nil {
			t.Errorf("LoadTimeZone(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", "Local", "Mars/Olympus_Mons", "Europe/../etc/passwd", "CET+1"} {
		if _, err := LoadTimeZone(name); err == nil {
			t.Errorf("LoadTimeZone(%q) succeeded, want an error", name)
		}
	}
}
