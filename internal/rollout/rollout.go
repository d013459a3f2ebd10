// Package rollout decides, for one MaintenanceWindow at one instant, which
// devices start an upgrade, which in-flight upgrades have timed out, what
// is pending, and why nothing moves. It is pure: the schedule's verdicts and
// the clock are inputs; all progress lives in each Device's status.upgrade,
// so the same input after a restart gives the same plan.
package rollout

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/intstr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/text"
)

// Defaults of the contract, used when the API server has not defaulted
// (objects built in code).
const (
	DefaultMaxFailures    = 1
	DefaultUpgradeTimeout = time.Hour
)

// Input is everything a plan depends on.
type Input struct {
	// Window is the MaintenanceWindow's name: the claim written into
	// status.upgrade.window.
	Window string
	Spec   *itmv1.MaintenanceWindowSpec
	// Open: inside a window and no blackout. CanStart: Open and before the
	// start cutoff. Blackout: a blackout holds now.
	Open, CanStart, Blackout bool
	// WindowStart is the start of the current window (zero when closed); the
	// failure budget counts failures since then.
	WindowStart time.Time
	// WindowEnd is the end of the current window, NextStart the next opening
	// (for messages).
	WindowEnd, NextStart time.Time
	// Devices are those the selector picks.
	Devices []*itmv1.Device
	Now     time.Time
}

// Plan is what to do now.
type Plan struct {
	// Start are the devices to begin upgrading, in order.
	Start []*itmv1.Device
	// TimedOut are this window's in-flight upgrades past upgradeTimeout.
	TimedOut []*itmv1.Device
	// InFlight are this window's devices whose upgrade is under way and
	// has not timed out.
	InFlight []*itmv1.Device
	// Unconfirmed reported success in this window but do not run the
	// target version: they count as failed.
	Unconfirmed []*itmv1.Device
	Counts      itmv1.UpgradeCounts
	// MaxUnavailable is the resolved limit.
	MaxUnavailable int
	// BlockedBy says why nothing (more) starts; empty when devices start or
	// nothing is left to do. Reason is the matching condition reason.
	BlockedBy, Reason string
	// NextTimeout is the earliest instant an in-flight upgrade times out.
	NextTimeout time.Time
}

// NeedsUpgrade reports whether the device should run another version: it
// has a target and its observed version differs (or is unknown).
func NeedsUpgrade(d *itmv1.Device) bool {
	if d.Spec.OS == nil || d.Spec.OS.TargetVersion == "" {
		return false
	}
	return d.Status.Observed == nil || d.Status.Observed.OSVersion != d.Spec.OS.TargetVersion
}

// InFlight reports whether the device's upgrade is under way (in any window).
func InFlight(d *itmv1.Device) bool {
	u := d.Status.Upgrade
	return u != nil && (u.State == itmv1.UpgradeStateAuthorized || u.State == itmv1.UpgradeStateInProgress)
}

// CheckedIn reports the device's CheckedIn condition: a silent device is
// never started.
func CheckedIn(d *itmv1.Device) bool {
	return meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)
}

// ResolveMaxUnavailable turns maxUnavailable into a count of total
// devices: a percentage rounds down, and at least one device may always be
// unavailable, or nothing would ever move.
func ResolveMaxUnavailable(v *intstr.IntOrString, total int) int {
	if v == nil {
		return 1
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, total, false)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// UpgradeTimeout is the spec's upgradeTimeout or its default.
func UpgradeTimeout(spec *itmv1.MaintenanceWindowSpec) time.Duration {
	if spec.Rollout.UpgradeTimeout != nil && spec.Rollout.UpgradeTimeout.Duration > 0 {
		return spec.Rollout.UpgradeTimeout.Duration
	}
	return DefaultUpgradeTimeout
}

// Compute makes the plan.
func Compute(in Input) Plan {
	devs := slices.Clone(in.Devices)
	slices.SortFunc(devs, func(a, b *itmv1.Device) int { return cmp.Compare(a.Name, b.Name) })
	p := Plan{MaxUnavailable: ResolveMaxUnavailable(in.Spec.Rollout.MaxUnavailable, len(devs))}
	maxFailures := DefaultMaxFailures
	if in.Spec.Rollout.MaxFailures != nil {
		maxFailures = int(*in.Spec.Rollout.MaxFailures)
	}
	timeout := UpgradeTimeout(in.Spec)

	unavailable := 0
	failuresNow := 0
	var lastFailed *itmv1.Device // the failure of this window blockedBy names
	failed := func(d *itmv1.Device) {
		failuresNow++
		if lastFailed == nil || laterFailure(d, lastFailed) {
			lastFailed = d
		}
	}
	var candidates []*itmv1.Device
	for _, d := range devs {
		u := d.Status.Upgrade
		mine := u != nil && u.Window == in.Window
		switch {
		case InFlight(d):
			unavailable++ // in flight under any window: it is down either way
			if !mine {
				if NeedsUpgrade(d) {
					p.Counts.Pending++ // claimed by another window for now
				}
				continue
			}
			p.Counts.InProgress++
			started := in.Now
			if u.StartedAt != nil {
				started = u.StartedAt.Time
			}
			if deadline := started.Add(timeout); !in.Now.Before(deadline) {
				p.TimedOut = append(p.TimedOut, d)
			} else {
				p.InFlight = append(p.InFlight, d)
				if p.NextTimeout.IsZero() || deadline.Before(p.NextTimeout) {
					p.NextTimeout = deadline
				}
			}
		case mine && u.State == itmv1.UpgradeStateFailed && NeedsUpgrade(d):
			thisWindow := u.FinishedAt == nil || !u.FinishedAt.Time.Before(in.WindowStart)
			if in.WindowStart.IsZero() || thisWindow {
				// Failed in this window (or, when closed, in the last one):
				// not retried until the next window.
				p.Counts.Failed++
				if !in.WindowStart.IsZero() {
					failed(d)
				}
			} else if device.Active(d) {
				p.Counts.Pending++ // failed in an earlier window: tried again
				candidates = append(candidates, d)
			}
		case mine && u.State == itmv1.UpgradeStateSucceeded && !NeedsUpgrade(d):
			p.Counts.Succeeded++
		case mine && u.State == itmv1.UpgradeStateSucceeded && (u.FinishedAt == nil || !u.FinishedAt.Time.Before(in.WindowStart)):
			p.Unconfirmed = append(p.Unconfirmed, d)
			p.Counts.Failed++
			if !in.WindowStart.IsZero() {
				failed(d)
			}
		case NeedsUpgrade(d) && device.Active(d):
			p.Counts.Pending++
			candidates = append(candidates, d)
		}
	}

	switch {
	case in.Spec.Paused:
		p.BlockedBy, p.Reason = "paused", itmv1.ReasonPaused
	case in.Blackout:
		p.BlockedBy, p.Reason = "blackout", itmv1.ReasonBlackout
	case !in.Open:
		p.BlockedBy, p.Reason = "outside window", itmv1.ReasonOutsideWindow
		if !in.NextStart.IsZero() {
			p.BlockedBy = "outside window; next opens " + in.NextStart.UTC().Format(time.RFC3339)
		}
	case failuresNow >= maxFailures:
		p.BlockedBy, p.Reason = fmt.Sprintf("failure budget: %d failed in this window (maxFailures %d)%s", failuresNow, maxFailures, failureNote(lastFailed)), itmv1.ReasonFailureBudget
	case !in.CanStart:
		p.BlockedBy, p.Reason = "start cutoff: no new device starts this close to the window's end "+in.WindowEnd.UTC().Format(time.RFC3339), itmv1.ReasonStartCutoff
	default:
		unupgradable := 0
		for _, d := range candidates {
			if unavailable >= p.MaxUnavailable {
				break
			}
			if !CheckedIn(d) {
				continue // silent: skipped, stays pending
			}
			if d.Spec.Class == itmv1.DeviceClassNode && in.Spec.NodeUpgrade == nil {
				unupgradable++ // nothing to run on the node
				continue
			}
			p.Start = append(p.Start, d)
			unavailable++
		}
		if len(p.Start) == 0 && len(p.InFlight) == 0 && p.Counts.Pending > 0 {
			switch {
			case unupgradable > 0:
				p.BlockedBy = fmt.Sprintf("spec.nodeUpgrade is not set: %d Node devices cannot be upgraded", unupgradable)
			case unavailable >= p.MaxUnavailable:
				p.BlockedBy = fmt.Sprintf("maxUnavailable %d reached by upgrades under other windows", p.MaxUnavailable)
			default:
				p.BlockedBy = fmt.Sprintf("%d devices pending, none checked in", p.Counts.Pending)
			}
			p.Reason = itmv1.ReasonWindowOpen
		}
	}
	// Starting devices move from pending to in progress.
	p.Counts.Pending -= int32(len(p.Start))    //nolint:gosec // bounded by the device count
	p.Counts.InProgress += int32(len(p.Start)) //nolint:gosec // bounded by the device count
	return p
}

// laterFailure: a finished after b (by status.upgrade.finishedAt, then name),
// so blockedBy names the same failure on every reconcile.
func laterFailure(a, b *itmv1.Device) bool {
	var at, bt time.Time
	if f := a.Status.Upgrade.FinishedAt; f != nil {
		at = f.Time
	}
	if f := b.Status.Upgrade.FinishedAt; f != nil {
		bt = f.Time
	}
	if !at.Equal(bt) {
		return at.After(bt)
	}
	return a.Name > b.Name
}

// maxFailureNote bounds the failed device's reason quoted in blockedBy
// (MaxLength 1024 with the rest).
const maxFailureNote = 768

// failureNote names the last failure of the window and its reason from the
// Device's status.upgrade.message, so whoever reads the window's blockedBy
// knows which device to inspect and why (a failed node stays cordoned).
func failureNote(d *itmv1.Device) string {
	if d == nil {
		return ""
	}
	msg := d.Status.Upgrade.Message
	if msg == "" {
		return "; last: " + d.Name
	}
	return text.Truncate("; last: "+d.Name+": "+msg, maxFailureNote)
}
