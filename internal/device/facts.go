package device

import (
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Facts about a Device that several parts of itmanager judge: decided here,
// once, and nowhere else.

// Active reports whether the device's lifecycle is Active (the default when
// unset): neither Retired nor Lost. Only an Active device can be granted
// access, assigned, or upgraded.
func Active(d *itmv1.Device) bool {
	return d.Spec.Lifecycle == "" || d.Spec.Lifecycle == itmv1.DeviceLifecycleActive
}

// CheckInVerdict is how a check-in time compares with a freshness bound.
type CheckInVerdict int

const (
	// NeverCheckedIn: no check-in is recorded.
	NeverCheckedIn CheckInVerdict = iota
	// CheckInInFuture: the recorded time lies further ahead than
	// MaxClockSkew; a device cannot claim a time, so it does not count.
	CheckInInFuture
	// CheckInStale: older than the bound.
	CheckInStale
	// CheckInFresh: within the bound.
	CheckInFresh
)

// JudgeCheckIn judges a check-in time against maxAge at now, and for a
// fresh one says when it goes stale.
func JudgeCheckIn(last *time.Time, maxAge time.Duration, now time.Time) (CheckInVerdict, time.Time) {
	switch {
	case last == nil:
		return NeverCheckedIn, time.Time{}
	case last.After(now.Add(MaxClockSkew)):
		return CheckInInFuture, time.Time{}
	case !now.Before(last.Add(maxAge)):
		return CheckInStale, time.Time{}
	default:
		return CheckInFresh, last.Add(maxAge)
	}
}

// Fresh reports whether a check-in at last is fresh for maxAge at now.
func Fresh(last *time.Time, maxAge time.Duration, now time.Time) bool {
	v, _ := JudgeCheckIn(last, maxAge, now)
	return v == CheckInFresh
}
