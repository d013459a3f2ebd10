package schedule

import (
	"testing"
	"time"
	_ "time/tzdata" // the manager embeds the zone database; so do these tests
)

// fuzzZones are the five zones FuzzSchedule draws from, as
// docs/maintenance.md names them: two with hour-long DST, Lord Howe's
// half-hour DST, UTC, and Kathmandu's +5:45 without DST.
var fuzzZones = []string{"Europe/Berlin", "America/Los_Angeles", "Australia/Lord_Howe", "UTC", "Asia/Kathmandu"}

// fuzzFrom and fuzzSpan are the instants FuzzSchedule draws now from: 2026
// and 2027.
var fuzzFrom = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

const fuzzSpan = 2 * 365 * 24 * time.Hour

// fuzzNow is FuzzSchedule's now for its offset argument: an instant of
// fuzzSpan, to the millisecond.
func fuzzNow(offset int64) time.Time {
	now := fuzzFrom.Add(time.Duration(offset%int64(fuzzSpan/time.Second)) * time.Second).Add(time.Duration(offset%1000) * time.Millisecond)
	if now.Before(fuzzFrom) {
		now = now.Add(fuzzSpan)
	}
	return now
}

// transition is a change of a zone's UTC offset.
type transition struct {
	at            time.Time
	before, after time.Duration // the offsets east of UTC on either side
}

// transitions reads from the zone database every change of zone's UTC
// offset in [from, to).
func transitions(t testing.TB, zone string, from, to time.Time) []transition {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	var out []transition
	for at := from; ; {
		_, end := at.In(loc).ZoneBounds()
		if end.IsZero() || !end.Before(to) {
			return out
		}
		_, before := end.Add(-time.Second).In(loc).Zone()
		_, after := end.In(loc).Zone()
		if before != after {
			out = append(out, transition{at: end, before: time.Duration(before) * time.Second, after: time.Duration(after) * time.Second})
		}
		at = end
	}
}

// TestTheFuzzZonesTransitions pins what the DST seeds of FuzzSchedule rest
// on: the zone database gives Berlin and Los Angeles two hour-long
// transitions in each of 2026 and 2027, Lord Howe two of half an hour, and
// UTC and Kathmandu none, so no zone's seeds can silently vanish.
func TestTheFuzzZonesTransitions(t *testing.T) {
	want := map[string]struct {
		perYear int
		shift   time.Duration
	}{
		"Europe/Berlin":       {2, time.Hour},
		"America/Los_Angeles": {2, time.Hour},
		"Australia/Lord_Howe": {2, 30 * time.Minute},
		"UTC":                 {0, 0},
		"Asia/Kathmandu":      {0, 0},
	}
	if len(want) != len(fuzzZones) {
		t.Fatalf("%d zones here, %d in fuzzZones", len(want), len(fuzzZones))
	}
	for _, zone := range fuzzZones {
		for _, year := range []int{2026, 2027} {
			from := time.Date(year, time.January, 1, 0, 0, 0, 0, time.UTC)
			got := transitions(t, zone, from, from.AddDate(1, 0, 0))
			if len(got) != want[zone].perYear {
				t.Errorf("%s: %d transitions in %d, want %d", zone, len(got), year, want[zone].perYear)
			}
			for _, tr := range got {
				if d := (tr.after - tr.before).Abs(); d != want[zone].shift {
					t.Errorf("%s: the transition at %s shifts %s, want %s", zone, tr.at.UTC(), d, want[zone].shift)
				}
			}
		}
	}
}

// addDSTSeeds seeds FuzzSchedule at every DST transition of its zones in
// 2026 and 2027, as the zone database has them: windows of each zone whose
// start is the first, middle and last wall-clock time of the skipped or
// repeated interval, daily and on Sundays (the transitions' weekday in all
// three zones), with now a second before the transition, at it, and an hour
// before with the later instant after it. UTC and Kathmandu, which have no
// transition, are seeded at the instants where the other zones have theirs.
func addDSTSeeds(f *testing.F) {
	var all []time.Time
	for zi, zone := range fuzzZones {
		for _, tr := range transitions(f, zone, fuzzFrom, fuzzFrom.Add(fuzzSpan)) {
			all = append(all, tr.at)
			lo, hi := tr.at.UTC().Add(tr.before), tr.at.UTC().Add(tr.after) // wall clocks
			if hi.Before(lo) {
				lo, hi = hi, lo
			}
			walls := []time.Time{lo, lo.Add(hi.Sub(lo) / 2), hi}
			for _, durMin := range []uint16{59, 179} { // windows of 1 h and 3 h
				addSeeds(f, zi, tr.at, walls, durMin)
			}
		}
	}
	for zi, zone := range fuzzZones {
		if len(transitions(f, zone, fuzzFrom, fuzzFrom.Add(fuzzSpan))) > 0 {
			continue
		}
		loc, err := time.LoadLocation(zone)
		if err != nil {
			f.Fatal(err)
		}
		for _, at := range all {
			addSeeds(f, zi, at, []time.Time{at.In(loc)}, 59)
		}
	}
}

// addSeeds adds, for the zone fuzzZones[zi], a daily and a Sunday window at
// each wall-clock time, with now around at.
func addSeeds(f *testing.F, zi int, at time.Time, walls []time.Time, durMin uint16) {
	for pattern := range 2 { // FuzzSchedule's cron for zone%3: daily, Sundays
		zone := zoneSeed(zi, pattern)
		for _, w := range walls {
			for _, now := range []struct {
				from time.Time
				step uint32
			}{{at.Add(-time.Second), 3600}, {at, 3600}, {at.Add(-time.Hour), 7200}} {
				offset := int64(now.from.Sub(fuzzFrom) / time.Second)
				if got := fuzzNow(offset); got.Before(now.from) || !got.Before(now.from.Add(time.Second)) {
					f.Fatalf("the seed for %s gives now = %s", now.from, got)
				}
				f.Add(zone, uint8(w.Minute()), uint8(w.Hour()), offset, durMin, now.step)
			}
		}
	}
}

// zoneSeed is FuzzSchedule's zone argument picking fuzzZones[zi] and the
// cron pattern'th pattern.
func zoneSeed(zi, pattern int) uint8 {
	for b := range 15 {
		if b%len(fuzzZones) == zi && b%3 == pattern {
			return uint8(b)
		}
	}
	panic("no zone argument for that zone and pattern")
}
