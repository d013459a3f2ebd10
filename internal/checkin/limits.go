package checkin

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"
)

// DefaultMinInterval is the default of --checkin-min-interval: a device
// that checks in more often is answered 429.
const DefaultMinInterval = 10 * time.Second

// LeaseState is what the abuse limits judge a check-in by. It comes from the
// device's Lease, not from the replica's memory, so the limits hold across
// replicas.
type LeaseState struct {
	// Sequence is the last accepted sequence (0: none yet).
	Sequence uint64
	// Renewed is when the last check-in was accepted (nil: never).
	Renewed *time.Time
	// Created is when the Lease was created (at enrolment).
	Created time.Time
}

// Admit decides whether a check-in with sequence seq may be recorded at now,
// given the device's Lease and the minimum interval between check-ins:
//   - a check-in sooner than minInterval after the last accepted one is
//     refused with 429 and how long to wait (a renew time further in the
//     future than minInterval, which only a replica with a wrong clock could
//     have written, does not lock the device out);
//   - a sequence not above the last accepted one is a replay (409);
//   - a sequence may advance by at most one per minInterval elapsed since
//     the last accepted check-in (or since enrolment), plus one, so a huge
//     sequence cannot lock the real agent out (409).
//
// Both 409s carry the last accepted sequence, so the token's holder can
// continue from it. A nil result admits the check-in.
func Admit(st LeaseState, seq uint64, now time.Time, minInterval time.Duration) *Refusal {
	if minInterval <= 0 {
		minInterval = DefaultMinInterval
	}
	since := st.Created
	if st.Renewed != nil {
		since = *st.Renewed
		if elapsed := now.Sub(since); elapsed < minInterval && elapsed > -minInterval {
			wait := min(minInterval-elapsed, minInterval)
			return &Refusal{Code: http.StatusTooManyRequests, RetryAfter: wait,
				Message: fmt.Sprintf("checking in too often: at most one check-in per %s", minInterval)}
		}
	}
	last := st.Sequence
	if seq <= last {
		return &Refusal{Code: http.StatusConflict, LastSequence: &last,
			Message: fmt.Sprintf("stale check-in: sequence %d is not newer than the last accepted %d", seq, last)}
	}
	if maxSeq := MaxSequence(last, since, now, minInterval); seq > maxSeq {
		return &Refusal{Code: http.StatusConflict, LastSequence: &last,
			Message: fmt.Sprintf("sequence %d advances too far: the last accepted is %d, and a sequence may advance by at most one per %s elapsed, plus one (at most %d now)",
				seq, last, minInterval, maxSeq)}
	}
	return nil
}

// MaxSequence is the highest sequence accepted at now: last plus one per
// minInterval elapsed since since, plus one (saturating at 2^64-1).
func MaxSequence(last uint64, since, now time.Time, minInterval time.Duration) uint64 {
	steps := uint64(0)
	if elapsed := now.Sub(since); elapsed > 0 && minInterval > 0 {
		steps = uint64(elapsed / minInterval) //nolint:gosec // positive
	}
	out := last
	for _, add := range []uint64{steps, 1} {
		if out > math.MaxUint64-add {
			return math.MaxUint64
		}
		out += add
	}
	return out
}

// Refusal is a check-in the limits refuse.
type Refusal struct {
	Code int
	// RetryAfter is how long to wait (429).
	RetryAfter time.Duration
	// LastSequence is the last accepted sequence (409).
	LastSequence *uint64
	Message      string
}

func (r *Refusal) Error() string { return r.Message }

// RetryAfterSeconds is the Retry-After header value for d: whole seconds,
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// recentCheckIns is one replica's memory of the devices it answered: until
// when each (device, token hash) must wait, and which are being answered
// right now. It only ever refuses sooner (429) than the Lease would; it
// never admits, so a replica that forgot, or another replica, still judges
// from the Lease.
type recentCheckIns struct {
	mu       sync.Mutex
	max      int
	notUntil map[string]time.Time
	busy     map[string]struct{}
}

func newRecentCheckIns(maxEntries int) *recentCheckIns {
	return &recentCheckIns{max: maxEntries, notUntil: map[string]time.Time{}, busy: map[string]struct{}{}}
}

// wait is how long key must still wait at now (0: ask the Lease).
func (r *recentCheckIns) wait(key string, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	until, ok := r.notUntil[key]
	if !ok {
		return 0
	}
	if d := until.Sub(now); d > 0 {
		return d
	}
	delete(r.notUntil, key)
	return 0
}

// remember records that key must wait until until.
func (r *recentCheckIns) remember(key string, until, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.notUntil) >= r.max {
		for k, t := range r.notUntil {
			if !t.After(now) {
				delete(r.notUntil, k)
			}
		}
		if len(r.notUntil) >= r.max {
			return // full of live entries: the Lease still judges
		}
	}
	r.notUntil[key] = until
}

// begin marks key as being answered; false when it already is.
func (r *recentCheckIns) begin(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.busy[key]; ok {
		return false
	}
	r.busy[key] = struct{}{}
	return true
}

func (r *recentCheckIns) end(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.busy, key)
}
