package accounts

import (
	"testing"
	"time"
)

func TestRecheck(t *testing.T) {
	down := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		since     time.Duration // time since the failures began
		transient bool
		every     time.Duration
		want      time.Duration
	}{
		"answered, or misconfigured: the interval":        {since: time.Second, every: 5 * time.Minute, want: 5 * time.Minute},
		"just gone down: a second later":                  {since: 0, transient: true, every: 5 * time.Minute, want: time.Second},
		"down 10s: again in 10s":                          {since: 10 * time.Second, transient: true, every: 5 * time.Minute, want: 10 * time.Second},
		"down 2m: again in 2m":                            {since: 2 * time.Minute, transient: true, every: 5 * time.Minute, want: 2 * time.Minute},
		"down an hour: the interval, never more":          {since: time.Hour, transient: true, every: 5 * time.Minute, want: 5 * time.Minute},
		"down since a clock ahead of ours: a second":      {since: -time.Minute, transient: true, every: 5 * time.Minute, want: time.Second},
		"an interval under a second is kept as it is set": {since: time.Minute, transient: true, every: 500 * time.Millisecond, want: 500 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Recheck(down.Add(tc.since), down, tc.transient, tc.every); got != tc.want {
				t.Fatalf("Recheck = %s, want %s", got, tc.want)
			}
		})
	}
}
