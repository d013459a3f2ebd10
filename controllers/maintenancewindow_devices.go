package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/rollout"
	"github.com/itmanager-io/itmanager/internal/text"
)

// The upgrade claims a window holds on Devices: taking them, ending them,
// and releasing them when the window is gone. Every write goes through the
// one transition table (rollout.Transition) as the window's actor.

// acted is what acting on a plan left: why nothing progresses (a drain's
// blocker overrides the plan's), the earliest a node step wants to be
// looked at again, and the errors.
type acted struct {
	blockedBy string
	requeueAt time.Time
	err       error
}

// startAll claims the plan's devices to start.
func (r *MaintenanceWindowReconciler) startAll(ctx context.Context, mw *itmv1.MaintenanceWindow, plan rollout.Plan, now time.Time) error {
	var errs []error
	for _, d := range plan.Start {
		errs = append(errs, r.start(ctx, mw, d, now))
	}
	return errors.Join(errs...)
}

// act times out, refuses unconfirmed successes and drives nodes (after
// startAll, whose error it carries on).
func (r *MaintenanceWindowReconciler) act(ctx context.Context, mw *itmv1.MaintenanceWindow, plan rollout.Plan, now time.Time, startErr error) acted {
	errs := []error{startErr}
	out := acted{blockedBy: plan.BlockedBy}
	earliest := func(t time.Time) {
		if !t.IsZero() && (out.requeueAt.IsZero() || t.Before(out.requeueAt)) {
			out.requeueAt = t
		}
	}
	for _, d := range plan.TimedOut {
		msg := fmt.Sprintf("no result within upgradeTimeout %s (state %s)", rollout.UpgradeTimeout(&mw.Spec), d.Status.Upgrade.State)
		if d.Spec.Class == itmv1.DeviceClassNode {
			msg += rollout.NodeLeftCordoned
		}
		errs = append(errs, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed, msg, now))
	}
	for _, d := range plan.Unconfirmed {
		observed := "an unknown version"
		if d.Status.Observed != nil && d.Status.Observed.OSVersion != "" {
			observed = d.Status.Observed.OSVersion
		}
		errs = append(errs, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed,
			fmt.Sprintf("reported success but runs %s, not the target %s", observed, d.Spec.OS.TargetVersion), now))
	}
	for _, d := range plan.Start {
		if d.Spec.Class == itmv1.DeviceClassNode {
			earliest(now.Add(r.drainPoll())) // the operator drives it
		}
	}
	for _, d := range plan.InFlight {
		if d.Spec.Class != itmv1.DeviceClassNode {
			continue
		}
		if r.own.unseen(d.UID) {
			// Claimed a moment ago: the node step works from the device as
			// the cache shows it, which its event brings here soon.
			earliest(now.Add(r.drainPoll()))
			continue
		}
		step, err := r.progressNode(ctx, mw, d, now)
		errs = append(errs, err)
		if step.blocked != "" {
			out.blockedBy = step.blocked
		}
		earliest(step.requeueAt)
	}
	out.err = errors.Join(errs...)
	return out
}

// selected are the Devices the window's selector picks.
func (r *MaintenanceWindowReconciler) selected(ctx context.Context, mw *itmv1.MaintenanceWindow) ([]*itmv1.Device, error) {
	sel, err := metav1.LabelSelectorAsSelector(&mw.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list := &itmv1.DeviceList{}
	if err := r.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	out := make([]*itmv1.Device, 0, len(list.Items))
	for i := range list.Items {
		r.own.overlay(&list.Items[i])
		out = append(out, &list.Items[i])
	}
	return out, nil
}

// unseenClaims remembers, per Device, the status.upgrade this process last
// wrote, the resourceVersion it was written over and the one it produced.
// While the cache still shows the version written over, the device is
// read as written: a claim is visible to every window at once.
type unseenClaims struct {
	mu sync.Mutex
	m  map[types.UID]unseenClaim
}

type unseenClaim struct {
	readRV, writtenRV string
	upgrade           *itmv1.UpgradeStatus
}

func (o *unseenClaims) wrote(uid types.UID, readRV string, d *itmv1.Device) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[types.UID]unseenClaim{}
	}
	o.m[uid] = unseenClaim{readRV: readRV, writtenRV: d.ResourceVersion, upgrade: d.Status.Upgrade.DeepCopy()}
}

func (o *unseenClaims) forget(uid types.UID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, uid)
}

// unseen reports whether the device was last read through overlay (the
// cache does not show this process's write yet).
func (o *unseenClaims) unseen(uid types.UID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.m[uid]
	return ok
}

// overlay reads d (a copy from the cache) as this process wrote it, when
// the cache has not shown that write yet; once it has moved on, the entry
// goes.
func (o *unseenClaims) overlay(d *itmv1.Device) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.m[d.UID]
	switch {
	case !ok:
	case d.ResourceVersion == e.readRV:
		d.ResourceVersion = e.writtenRV
		d.Status.Upgrade = e.upgrade.DeepCopy()
	default:
		delete(o.m, d.UID)
	}
}

// start claims a device for this window, guarded by the resourceVersion of
// the read that saw it free: two windows racing for one device cannot both
// win. Agent devices are Authorized (their agent takes it from there); Node
// devices go InProgress and the operator drives them.
func (r *MaintenanceWindowReconciler) start(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, now time.Time) error {
	state := itmv1.UpgradeStateAuthorized
	msg := "authorized; the agent starts at its next check-in"
	if d.Spec.Class == itmv1.DeviceClassNode {
		state, msg = itmv1.UpgradeStateInProgress, "cordoning"
	}
	attempts := int32(1)
	if d.Status.Upgrade != nil {
		attempts = d.Status.Upgrade.Attempts + 1
	}
	sent, err := r.writeUpgrade(ctx, d, &itmv1.UpgradeStatus{
		State: state, TargetVersion: d.Spec.OS.TargetVersion, Window: mw.Name,
		StartedAt: ptr.To(metav1.NewTime(now)), Attempts: attempts, Message: msg,
	})
	if err != nil {
		return fmt.Errorf("start the upgrade of Device %s: %w", d.Name, err)
	}
	if sent {
		r.events().Eventf(d, mw, corev1.EventTypeNormal, itmv1.MaintenanceEventUpgradeStarted, "Upgrade",
			"window %s: upgrade to %s started (attempt %d)", mw.Name, d.Spec.OS.TargetVersion, attempts)
	}
	return nil
}

// finish records an upgrade's end on the device (d gets the written
// status).
func (r *MaintenanceWindowReconciler) finish(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, state itmv1.UpgradeState, msg string, now time.Time) error {
	u := d.Status.Upgrade.DeepCopy()
	u.State, u.Message, u.FinishedAt = state, text.Truncate(msg, rollout.MaxUpgradeMessage), ptr.To(metav1.NewTime(now))
	sent, err := r.writeUpgrade(ctx, d, u)
	if err != nil {
		return fmt.Errorf("record the upgrade of Device %s as %s: %w", d.Name, state, err)
	}
	if sent {
		kind, reason := corev1.EventTypeNormal, itmv1.MaintenanceEventUpgradeSucceeded
		if state == itmv1.UpgradeStateFailed {
			kind, reason = corev1.EventTypeWarning, itmv1.MaintenanceEventUpgradeFailed
		}
		r.events().Eventf(d, mw, kind, reason, "Upgrade", "window %s: %s", mw.Name, msg)
	}
	return nil
}

// releaseClaims ends every in-flight claim naming window on any Device
// (selected or not: labels may have changed since), as rollout.Release
// says. mw is the window when it still exists (terminating), else nil.
func (r *MaintenanceWindowReconciler) releaseClaims(ctx context.Context, window string, mw *itmv1.MaintenanceWindow) error {
	list := &itmv1.DeviceList{}
	// Live, not from the cache: a claim written a moment ago must not be
	// missed just before the window goes (this is rare: once per deletion).
	if err := r.APIReader.List(ctx, list); err != nil {
		return err
	}
	now := r.Clock.Now()
	var errs []error
	for i := range list.Items {
		u := rollout.Release(&list.Items[i], window, now)
		if u == nil {
			continue
		}
		d := &list.Items[i]
		sent, err := r.writeUpgrade(ctx, d, u)
		if client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("release the upgrade of Device %s: %w", d.Name, err))
			continue
		}
		if sent && err == nil {
			var related runtime.Object // an interface holding a nil window is not nil
			if mw != nil {
				related = mw
			}
			r.events().Event(d, related, corev1.EventTypeWarning, itmv1.MaintenanceEventUpgradeFailed, "Upgrade", u.Message)
		}
	}
	return errors.Join(errs...)
}

// writeUpgrade writes u as d's status.upgrade (shared status: a merge
// patch under an optimistic lock on the version d was read at), if the
// window may make that move. d gets the written status.
func (r *MaintenanceWindowReconciler) writeUpgrade(ctx context.Context, d *itmv1.Device, u *itmv1.UpgradeStatus) (bool, error) {
	var from itmv1.UpgradeState
	if d.Status.Upgrade != nil {
		from = d.Status.Upgrade.State
	}
	if rollout.Transition(rollout.ActorWindow, from, u.State) == rollout.Refused {
		return false, fmt.Errorf("upgrade %q -> %q is not a window's move", from, u.State)
	}
	base := d.DeepCopy()
	d.Status.Upgrade = u
	sent, err := r.statusWriters().upgrades.Write(ctx, base, d)
	switch {
	case err != nil:
		r.own.forget(d.UID)
	case sent:
		r.own.wrote(d.UID, base.ResourceVersion, d)
	}
	return sent, err
}
