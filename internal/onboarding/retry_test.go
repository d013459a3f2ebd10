package onboarding

import (
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	var zero time.Time
	tests := map[string]struct {
		backoff  time.Duration
		instants []time.Time
		want     time.Duration
	}{
		"nothing due: the backoff":                         {backoff: 16 * time.Minute, instants: []time.Time{zero, zero}, want: 16 * time.Minute},
		"endDate before the backoff ends: endDate":         {backoff: 16 * time.Minute, instants: []time.Time{now.Add(3 * time.Second), zero}, want: 3 * time.Second},
		"the first of endDate and a renewal":               {backoff: time.Hour, instants: []time.Time{now.Add(10 * time.Minute), now.Add(2 * time.Minute)}, want: 2 * time.Minute},
		"endDate after the backoff: the backoff":           {backoff: 5 * time.Second, instants: []time.Time{now.Add(time.Minute)}, want: 5 * time.Second},
		"an instant just past waits a second, not zero":    {backoff: time.Minute, instants: []time.Time{now.Add(-time.Millisecond)}, want: time.Second},
		"a short backoff stays shorter than that second":   {backoff: 40 * time.Millisecond, instants: []time.Time{now}, want: 40 * time.Millisecond},
		"no instants at all: the backoff":                  {backoff: 2 * time.Second, want: 2 * time.Second},
		"several instants, one zero: the earliest nonzero": {backoff: time.Hour, instants: []time.Time{zero, now.Add(30 * time.Second), now.Add(time.Minute)}, want: 30 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := RetryAfter(now, tc.backoff, tc.instants...); got != tc.want {
				t.Fatalf("RetryAfter = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestWake(t *testing.T) {
	if got := Wake(now); got != 0 {
		t.Errorf("Wake() = %s, want 0", got)
	}
	if got := Wake(now, time.Time{}, now.Add(90*time.Second)); got != 90*time.Second {
		t.Errorf("Wake = %s, want 1m30s", got)
	}
}
