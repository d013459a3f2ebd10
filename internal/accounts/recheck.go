package accounts

import "time"

// minRecheck is the soonest a failing provider is checked again.
const minRecheck = time.Second

// Recheck is how long after a connectivity check at now a provider is
// checked again. One that answered, or failed in a way only a change to it
// fixes (transient false), waits every. One failing transiently since
// failingSince (unreachable) is checked again after as long as it has been
// failing, at least a second and at most every: the waits double through
// an outage, so a provider that comes back is seen Ready, and the requests
// it blocked resume, within about the outage's length rather than a whole
// interval.
func Recheck(now, failingSince time.Time, transient bool, every time.Duration) time.Duration {
	if !transient || every <= minRecheck {
		return every
	}
	return min(max(now.Sub(failingSince), minRecheck), every)
}
