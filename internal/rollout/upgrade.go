package rollout

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Actor is who moves a device's status.upgrade.
type Actor int

const (
	// ActorWindow is the MaintenanceWindow controller: it claims a device
	// (Authorized for an agent, InProgress for a Node it drives), drives a
	// Node's upgrade to its end, times upgrades out, refuses an
	// unconfirmed success and releases the claims of a deleted window.
	ActorWindow Actor = iota
	// ActorDevice is the device's own token, through the check-in service:
	// it may only carry out what the operator authorized.
	ActorDevice
)

func (a Actor) String() string {
	if a == ActorDevice {
		return "device"
	}
	return "window"
}

// Verdict is what the transition table says about one move.
type Verdict int

const (
	// Refused: the actor may not make this move.
	Refused Verdict = iota
	// Allowed: the move is the actor's to make.
	Allowed
	// Same: the state already holds; nothing to move (a device's repeated
	// report after a lost answer records nothing).
	Same
)

// Transition is the one status.upgrade transition table. from is the
// recorded state ("" when the device has no upgrade status), to the state
// the actor wants.
//
//	window: "" | Pending | Succeeded | Failed → Authorized | InProgress (claim)
//	        Authorized → Failed (timed out, window deleted)
//	        InProgress → Succeeded | Failed (node step, timed out, window deleted)
//	        Succeeded → Failed (reported success not confirmed)
//	device: Authorized → InProgress → Succeeded | Failed
//
// Anything else is refused; from == to is Same for either actor.
func Transition(actor Actor, from, to itmv1.UpgradeState) Verdict {
	if from == to {
		return Same
	}
	var ok bool
	switch actor {
	case ActorWindow:
		switch from {
		case "", itmv1.UpgradeStatePending, itmv1.UpgradeStateSucceeded, itmv1.UpgradeStateFailed:
			ok = to == itmv1.UpgradeStateAuthorized || to == itmv1.UpgradeStateInProgress ||
				from == itmv1.UpgradeStateSucceeded && to == itmv1.UpgradeStateFailed
		case itmv1.UpgradeStateAuthorized:
			ok = to == itmv1.UpgradeStateFailed
		case itmv1.UpgradeStateInProgress:
			ok = to == itmv1.UpgradeStateSucceeded || to == itmv1.UpgradeStateFailed
		}
	case ActorDevice:
		switch from {
		case itmv1.UpgradeStateAuthorized:
			ok = to == itmv1.UpgradeStateInProgress
		case itmv1.UpgradeStateInProgress:
			ok = to == itmv1.UpgradeStateSucceeded || to == itmv1.UpgradeStateFailed
		}
	}
	if ok {
		return Allowed
	}
	return Refused
}

// Authorizes reports whether a device in this state is told of its upgrade
// at check-in (the authorization the check-in service hands out).
func Authorizes(s itmv1.UpgradeState) bool {
	return s == itmv1.UpgradeStateAuthorized || s == itmv1.UpgradeStateInProgress
}

// NodeLeftCordoned ends the message of a Node upgrade that stopped where
// nothing drives it any more: the cordon stays, and the message says so.
const NodeLeftCordoned = "; the node is left cordoned for inspection"

// Release is what becomes of a device's upgrade claimed by window when that
// window is deleted (or found gone): an authorization no agent has taken
// up is withdrawn, an upgrade under way is failed, as nobody would time it
// out any more; both name the window. A Node keeps its cordon (only the
// node step uncordons, and it no longer runs), which the message says. It
// returns nil when the device holds no in-flight claim of window.
func Release(d *itmv1.Device, window string, now time.Time) *itmv1.UpgradeStatus {
	u := d.Status.Upgrade
	if u == nil || u.Window != window || !Authorizes(u.State) {
		return nil
	}
	out := u.DeepCopy()
	out.State = itmv1.UpgradeStateFailed
	out.FinishedAt = &metav1.Time{Time: now}
	if u.State == itmv1.UpgradeStateAuthorized {
		out.Message = "MaintenanceWindow " + window + " was deleted before the upgrade started"
		return out
	}
	out.Message = "MaintenanceWindow " + window + " was deleted while the upgrade was in progress; its result is no longer awaited"
	if d.Spec.Class == itmv1.DeviceClassNode {
		out.Message += NodeLeftCordoned
	}
	return out
}

// MaxUpgradeMessage is the API's limit of status.upgrade.message.
const MaxUpgradeMessage = 1024
