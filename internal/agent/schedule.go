package agent

import (
	"maps"
	"slices"
	"time"

	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

// DefaultFactPoll is the default of --fact-poll: how often the agent
// re-gathers its facts between check-ins to report a change at once.
const DefaultFactPoll = time.Second

// assumedMinInterval is the check-in service's default
// --checkin-min-interval. When an answer does not say the service's minimum
// (a service older than minIntervalMilliseconds), the agent keeps this long
// after an accepted check-in before checking in early on a fact change
// (never longer than 90% of the interval, the most the service allows), or
// longer when a 429 taught it so.
const assumedMinInterval = 10 * time.Second

// Reason says why the agent checks in.
type Reason string

// The reasons.
const (
	// ReasonDue: the interval the service asked for ran out, or a retry or
	// an upgrade report is due.
	ReasonDue Reason = "due"
	// ReasonFactsChanged: facts differ from those last reported, and the
	// service allows a check-in now.
	ReasonFactsChanged Reason = "facts changed"
)

// LastAnswer is what the agent learnt from its last check-in attempt.
type LastAnswer struct {
	// At is when the answer (or the failure) came.
	At time.Time
	// Wait is how long after At the next check-in is due: the jittered
	// interval, a backoff, a Retry-After, or a prompt upgrade report.
	Wait time.Duration
	// Hold is how long after At no check-in may be sent whatever changed:
	// the service's minimum interval after an accepted check-in, a 429's or
	// 503's Retry-After, and all of Wait after any other failure (a fact
	// change never cuts a backoff short).
	Hold time.Duration
}

// NextCheckIn is when to check in next, and why: when the facts gathered
// now differ from those last reported (accepted) and the service allows it,
// at once (or as soon as it allows); otherwise when the last answer said.
// reported nil (nothing accepted yet) never triggers an early check-in:
// the one due carries the facts.
func NextCheckIn(now time.Time, reported *wire.Facts, current wire.Facts, last LastAnswer) (time.Time, Reason) {
	due := last.At.Add(max(last.Wait, last.Hold))
	if reported != nil && !SameFacts(*reported, current) {
		at := last.At.Add(last.Hold)
		if at.Before(now) {
			at = now
		}
		if at.Before(due) {
			return at, ReasonFactsChanged
		}
	}
	return due, ReasonDue
}

// SameFacts reports whether a and b report the same: every fact counts
// (addresses as a set), since posture reads OS version, disk encryption and
// attributes, and policies the addresses.
func SameFacts(a, b wire.Facts) bool {
	sameBool := (a.DiskEncrypted == nil) == (b.DiskEncrypted == nil) &&
		(a.DiskEncrypted == nil || *a.DiskEncrypted == *b.DiskEncrypted)
	return sameBool && a.OSVersion == b.OSVersion && a.Hostname == b.Hostname &&
		a.AgentVersion == b.AgentVersion && maps.Equal(a.Attributes, b.Attributes) &&
		slices.Equal(sorted(a.Addresses), sorted(b.Addresses))
}

func sorted(s []string) []string {
	return slices.Sorted(slices.Values(s))
}

// minInterval is what the agent keeps between an accepted check-in and the
// next: the service's own minimum when it says it, else the assumed
// default (at most 90% of the interval) or what a 429 taught.
func (a *Agent) minInterval() time.Duration {
	if a.serviceMin > 0 {
		return a.serviceMin
	}
	return max(min(assumedMinInterval, a.interval*9/10), a.learnedMin)
}
