package device

import (
	"testing"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestJudgeCheckIn(t *testing.T) {
	now := time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	cases := []struct {
		name    string
		last    *time.Time
		want    CheckInVerdict
		expires time.Time
	}{
		{"none", nil, NeverCheckedIn, time.Time{}},
		{"within skew counts", at(MaxClockSkew), CheckInFresh, now.Add(MaxClockSkew + time.Minute)},
		{"beyond skew is ignored", at(MaxClockSkew + time.Millisecond), CheckInInFuture, time.Time{}},
		{"just fresh", at(-time.Minute + time.Nanosecond), CheckInFresh, now.Add(time.Nanosecond)},
		{"exactly maxAge old is stale", at(-time.Minute), CheckInStale, time.Time{}},
		{"old", at(-time.Hour), CheckInStale, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, exp := JudgeCheckIn(c.last, time.Minute, now)
			if v != c.want || !exp.Equal(c.expires) {
				t.Fatalf("JudgeCheckIn = %v, %v; want %v, %v", v, exp, c.want, c.expires)
			}
			if Fresh(c.last, time.Minute, now) != (c.want == CheckInFresh) {
				t.Fatalf("Fresh disagrees with JudgeCheckIn")
			}
		})
	}
}

func TestActive(t *testing.T) {
	for lc, want := range map[itmv1.DeviceLifecycle]bool{
		"": true, itmv1.DeviceLifecycleActive: true, itmv1.DeviceLifecycleRetired: false, itmv1.DeviceLifecycleLost: false,
	} {
		d := &itmv1.Device{}
		d.Spec.Lifecycle = lc
		if Active(d) != want {
			t.Errorf("Active(%q) = %v, want %v", lc, !want, want)
		}
	}
}
