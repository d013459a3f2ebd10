package onboarding

import "time"

// minWake is the soonest a pass waits for an instant, so that an instant
// just past (or a clock a little behind) never spins.
const minWake = time.Second

// Wake is how long from now until the first of instants (startDate,
// endDate, a credential renewal), at least a second; 0 when every instant
// is zero (nothing changes with time alone).
func Wake(now time.Time, instants ...time.Time) time.Duration {
	var wake time.Duration
	for _, t := range instants {
		if t.IsZero() {
			continue
		}
		if after := max(t.Sub(now), minWake); wake == 0 || after < wake {
			wake = after
		}
	}
	return wake
}

// RetryAfter is when a pass that a provider failed runs again: after
// backoff, but never later than the first of instants. A provider that does
// not answer must not hold back what time alone decides: an endDate that
// passes during a directory outage starts offboarding at once (the other
// providers' accounts undone, access withdrawn), not a backoff later.
func RetryAfter(now time.Time, backoff time.Duration, instants ...time.Time) time.Duration {
	if wake := Wake(now, instants...); wake > 0 && wake < backoff {
		return wake
	}
	return backoff
}
