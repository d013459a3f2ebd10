package schedule

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustSchedule(t testing.TB, tz string, windows []itmv1.Window, mutate ...func(*itmv1.MaintenanceWindowSpec)) *Schedule {
	t.Helper()
	spec := &itmv1.MaintenanceWindowSpec{TimeZone: tz, Windows: windows}
	for _, m := range mutate {
		m(spec)
	}
	s, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func win(cron string, d time.Duration) itmv1.Window {
	return itmv1.Window{Schedule: cron, Duration: metav1.Duration{Duration: d}}
}

// TestNextAcrossDST walks the openings of windows around both 2026 DST
// transitions of Europe/Berlin (29 March, 25 October) and
// America/Los_Angeles (8 March, 1 November).
func TestNextAcrossDST(t *testing.T) {
	tests := map[string]struct {
		tz     string
		cron   string
		dur    time.Duration
		from   string
		starts []string // consecutive openings after from (UTC)
		ends   []string // their ends
	}{
		"Berlin spring forward: 02:30 does not exist, runs at 03:00 CEST": {
			tz: "Europe/Berlin", cron: "30 2 * * *", dur: time.Hour, from: "2026-03-27T12:00:00Z",
			starts: []string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"},
			ends:   []string{"2026-03-28T02:30:00Z", "2026-03-29T02:00:00Z", "2026-03-30T01:30:00Z"},
		},
		"Berlin spring forward: every 15 minutes of the missing hour collapse into one start": {
			tz: "Europe/Berlin", cron: "*/15 2 * * *", dur: 10 * time.Minute, from: "2026-03-29T00:00:00Z",
			starts: []string{"2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z", "2026-03-30T00:15:00Z"},
		},
		"Berlin fall back: 02:30 happens twice, the window opens once, at the first": {
			tz: "Europe/Berlin", cron: "30 2 * * *", dur: time.Hour, from: "2026-10-24T12:00:00Z",
			starts: []string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"},
			ends:   []string{"2026-10-25T01:30:00Z", "2026-10-26T02:30:00Z"},
		},
		"Berlin fall back: a 3h window over the repeated hour lasts 3h of elapsed time": {
			tz: "Europe/Berlin", cron: "0 1 25 10 *", dur: 3 * time.Hour, from: "2026-10-01T00:00:00Z",
			starts: []string{"2026-10-24T23:00:00Z"},
			ends:   []string{"2026-10-25T02:00:00Z"}, // 01:00 CEST + 3h = 03:00 CET
		},
		"Los Angeles spring forward: 02:30 runs at 03:00 PDT": {
			tz: "America/Los_Angeles", cron: "30 2 * * SUN", dur: time.Hour, from: "2026-03-01T00:00:00Z",
			starts: []string{"2026-03-01T10:30:00Z", "2026-03-08T10:00:00Z", "2026-03-15T09:30:00Z"},
		},
		"Los Angeles fall back: 01:30 runs once, in PDT": {
			tz: "America/Los_Angeles", cron: "30 1 * * *", dur: 30 * time.Minute, from: "2026-10-31T12:00:00Z",
			starts: []string{"2026-11-01T08:30:00Z", "2026-11-02T09:30:00Z"},
		},
		"across midnight": {
			tz: "Europe/Berlin", cron: "0 22 * * FRI", dur: 6 * time.Hour, from: "2026-06-01T00:00:00Z",
			starts: []string{"2026-06-05T20:00:00Z", "2026-06-12T20:00:00Z"},
			ends:   []string{"2026-06-06T02:00:00Z", "2026-06-13T02:00:00Z"},
		},
		"across a month end, skipping months without the day": {
			tz: "UTC", cron: "0 23 31 * *", dur: 3 * time.Hour, from: "2026-01-15T00:00:00Z",
			starts: []string{"2026-01-31T23:00:00Z", "2026-03-31T23:00:00Z", "2026-05-31T23:00:00Z"},
			ends:   []string{"2026-02-01T02:00:00Z", "2026-04-01T02:00:00Z", "2026-06-01T02:00:00Z"},
		},
		"leap day only": {
			tz: "UTC", cron: "0 0 29 2 *", dur: time.Hour, from: "2026-01-01T00:00:00Z",
			starts: []string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := mustSchedule(t, tc.tz, []itmv1.Window{win(tc.cron, tc.dur)})
			now := utc(tc.from)
			for i, want := range tc.starts {
				next, ok := s.Next(now)
				if !ok {
					t.Fatalf("no opening after %s", now)
				}
				if !next.Start.Equal(utc(want)) {
					t.Fatalf("opening %d after %s = %s, want %s", i, now.UTC(), next.Start.UTC(), want)
				}
				if tc.ends != nil && !next.End.Equal(utc(tc.ends[i])) {
					t.Fatalf("opening %d ends %s, want %s", i, next.End.UTC(), tc.ends[i])
				}
				if next.End.Sub(next.Start) != tc.dur {
					t.Fatalf("opening %d lasts %s of elapsed time, want %s", i, next.End.Sub(next.Start), tc.dur)
				}
				now = next.Start
			}
		})
	}
}

func TestNeverFires(t *testing.T) {
	s := mustSchedule(t, "UTC", []itmv1.Window{win("0 0 31 4 *", time.Hour)})
	if _, ok := s.Next(utc("2026-01-01T00:00:00Z")); ok {
		t.Fatal("31 April opened")
	}
	if b := s.NextBoundary(utc("2026-01-01T00:00:00Z")); !b.IsZero() {
		t.Fatalf("boundary %s for a schedule that never fires", b)
	}
}

func TestOpenCurrentBlackoutsCutoff(t *testing.T) {
	// Saturdays 22:00 Berlin for 8h (across midnight); a fixed blackout over
	// the second half of one window; a recurring blackout on the first
	// Saturday hour of every month (day-of-month 1-7 is not combined with a
	// weekday: that would be refused).
	s := mustSchedule(t, "Europe/Berlin", []itmv1.Window{win("0 22 * * SAT", 8*time.Hour)}, func(spec *itmv1.MaintenanceWindowSpec) {
		spec.StartCutoff = &metav1.Duration{Duration: time.Hour}
		spec.Blackouts = []itmv1.Blackout{
			{Start: &metav1.Time{Time: utc("2026-06-14T00:00:00Z")}, End: &metav1.Time{Time: utc("2026-06-14T02:00:00Z")}},
			{Schedule: "0 23 * 7 *", Duration: &metav1.Duration{Duration: 30 * time.Minute}},
		}
	})
	tests := []struct {
		at        string
		open      bool
		canStart  bool
		current   string // start of Current, "" when none
		boundary  string
		nextStart string
	}{
		{at: "2026-06-13T19:59:59Z", open: false, boundary: "2026-06-13T20:00:00Z", nextStart: "2026-06-13T20:00:00Z"},
		{at: "2026-06-13T20:00:00Z", open: true, canStart: true, current: "2026-06-13T20:00:00Z", boundary: "2026-06-14T00:00:00Z", nextStart: "2026-06-20T20:00:00Z"},
		// the fixed blackout wins inside the window
		{at: "2026-06-14T00:30:00Z", open: false, current: "2026-06-13T20:00:00Z", boundary: "2026-06-14T02:00:00Z", nextStart: "2026-06-20T20:00:00Z"},
		// after it, open again; but within the last hour nothing new starts
		{at: "2026-06-14T02:00:00Z", open: true, canStart: true, current: "2026-06-13T20:00:00Z", boundary: "2026-06-14T03:00:00Z", nextStart: "2026-06-20T20:00:00Z"},
		{at: "2026-06-14T03:00:00Z", open: true, canStart: false, current: "2026-06-13T20:00:00Z", boundary: "2026-06-14T04:00:00Z", nextStart: "2026-06-20T20:00:00Z"},
		// the end is exclusive
		{at: "2026-06-14T04:00:00Z", open: false, boundary: "2026-06-20T20:00:00Z", nextStart: "2026-06-20T20:00:00Z"},
		// a recurring blackout in July: 23:00-23:30 Berlin (21:00Z)
		{at: "2026-07-04T21:10:00Z", open: false, current: "2026-07-04T20:00:00Z", boundary: "2026-07-04T21:30:00Z", nextStart: "2026-07-11T20:00:00Z"},
	}
	for _, tc := range tests {
		now := utc(tc.at)
		if got := s.Open(now); got != tc.open {
			t.Errorf("%s: Open = %v, want %v", tc.at, got, tc.open)
		}
		if got := s.CanStart(now); got != tc.canStart {
			t.Errorf("%s: CanStart = %v, want %v", tc.at, got, tc.canStart)
		}
		cur, ok := s.Current(now)
		if (tc.current == "") == ok || (ok && !cur.Start.Equal(utc(tc.current))) {
			t.Errorf("%s: Current = %v %v, want %q", tc.at, cur, ok, tc.current)
		}
		if got := s.NextBoundary(now); !got.Equal(utc(tc.boundary)) {
			t.Errorf("%s: NextBoundary = %s, want %s", tc.at, got.UTC(), tc.boundary)
		}
		if next, _ := s.Next(now); !next.Start.Equal(utc(tc.nextStart)) {
			t.Errorf("%s: Next = %s, want %s", tc.at, next.Start.UTC(), tc.nextStart)
		}
	}
}

func TestLongAndOverlappingWindows(t *testing.T) {
	// Ten days from the first of every month: longer than a week.
	s := mustSchedule(t, "UTC", []itmv1.Window{win("0 0 1 * *", 240*time.Hour)})
	cur, ok := s.Current(utc("2026-05-09T12:00:00Z"))
	if !ok || !cur.Start.Equal(utc("2026-05-01T00:00:00Z")) || !cur.End.Equal(utc("2026-05-11T00:00:00Z")) {
		t.Fatalf("Current = %v %v", cur, ok)
	}
	// Two schedules back to back are one window.
	s = mustSchedule(t, "UTC", []itmv1.Window{win("0 1 * * *", 2*time.Hour), win("0 3 * * *", time.Hour)})
	cur, ok = s.Current(utc("2026-05-09T01:30:00Z"))
	if !ok || !cur.End.Equal(utc("2026-05-09T04:00:00Z")) {
		t.Fatalf("back-to-back windows: Current = %v %v, want end 04:00", cur, ok)
	}
	if b := s.NextBoundary(utc("2026-05-09T01:30:00Z")); !b.Equal(utc("2026-05-09T04:00:00Z")) {
		t.Fatalf("boundary inside merged windows = %s", b)
	}
}

func TestNewNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		spec itmv1.MaintenanceWindowSpec
		want string
	}{
		{itmv1.MaintenanceWindowSpec{TimeZone: "Mars/Olympus", Windows: []itmv1.Window{win("0 1 * * *", time.Hour)}}, "spec.timeZone"},
		{itmv1.MaintenanceWindowSpec{Windows: []itmv1.Window{win("0 1 * * *", time.Hour), win("61 1 * * *", time.Hour)}}, "spec.windows[1].schedule"},
		{itmv1.MaintenanceWindowSpec{Windows: []itmv1.Window{win("0 1 * * *", time.Hour)}, Blackouts: []itmv1.Blackout{{Schedule: "x"}}}, "spec.blackouts[0]"},
	} {
		if _, err := New(&tc.spec); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New = %v, want an error naming %s", err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// FuzzSchedule checks, for arbitrary schedules, zones and instants, that
// Next is strictly after now and monotonic, that a window is current at its
// own start, that Open agrees with Current and Blackout, and that nothing
// changes between now and NextBoundary. Its seeds include every DST
// transition of its zones in 2026 and 2027 (addDSTSeeds).
func FuzzSchedule(f *testing.F) {
	f.Add(uint8(0), uint8(30), uint8(2), int64(0), uint16(60), uint32(1000))
	f.Add(uint8(1), uint8(0), uint8(1), int64(1e6), uint16(180), uint32(86400))
	f.Add(uint8(2), uint8(45), uint8(23), int64(5e7), uint16(600), uint32(7*86400))
	addDSTSeeds(f)
	f.Fuzz(func(t *testing.T, zone, minute, hour uint8, offset int64, durMin uint16, step uint32) {
		cron := []string{"%d %d * * *", "%d %d * * SUN", "%d %d 1,15 * *"}[int(zone)%3]
		s, err := New(&itmv1.MaintenanceWindowSpec{
			TimeZone: fuzzZones[int(zone)%len(fuzzZones)],
			Windows:  []itmv1.Window{win(sprintf(cron, int(minute)%60, int(hour)%24), time.Duration(int(durMin)%2000+1)*time.Minute)},
			Blackouts: []itmv1.Blackout{{Schedule: sprintf("%d %d * * MON", int(minute)%60, int(hour+1)%24),
				Duration: &metav1.Duration{Duration: 40 * time.Minute}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		// 2026 and 2027, with both DST transitions of every zone each year.
		now := fuzzNow(offset)
		later := now.Add(time.Duration(step%(30*86400)) * time.Second)

		n1, ok1 := s.Next(now)
		n2, ok2 := s.Next(later)
		if !ok1 || !ok2 {
			t.Fatal("a daily or weekly schedule has no next opening")
		}
		if !n1.Start.After(now) || n2.Start.Before(n1.Start) {
			t.Fatalf("Next not strictly after now or not monotonic: %s → %s, %s → %s", now, n1.Start, later, n2.Start)
		}
		if _, in := s.Current(n1.Start); !in {
			t.Fatalf("not current at its own start %s", n1.Start)
		}
		cur, in := s.Current(now)
		_, black := s.Blackout(now)
		if s.Open(now) != (in && !black) {
			t.Fatalf("Open disagrees with Current/Blackout at %s", now)
		}
		if in && !cur.Contains(now) {
			t.Fatalf("Current %v does not contain %s", cur, now)
		}
		b := s.NextBoundary(now)
		if b.IsZero() || !b.After(now) {
			t.Fatalf("no boundary after %s", now)
		}
		mid := now.Add(b.Sub(now) / 2)
		if s.Open(mid) != s.Open(now) || s.CanStart(mid) != s.CanStart(now) {
			t.Fatalf("Open/CanStart changed at %s, before the boundary %s (from %s)", mid, b, now)
		}
	})
}
