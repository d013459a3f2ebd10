package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// TestUnseenClaimsShowOwnWriteOnlyUntilTheCacheMovesOn: a claim this
// process wrote is what a window reads while the cache still shows the
// version it was written over, and never once the cache shows any other.
func TestUnseenClaimsShowOwnWriteOnlyUntilTheCacheMovesOn(t *testing.T) {
	dev := func(rv string, u *itmv1.UpgradeStatus) *itmv1.Device {
		return &itmv1.Device{ObjectMeta: metav1.ObjectMeta{UID: "u1", ResourceVersion: rv}, Status: itmv1.DeviceStatus{Upgrade: u}}
	}
	claim := &itmv1.UpgradeStatus{State: itmv1.UpgradeStateAuthorized, Window: "a"}
	var o unseenClaims
	o.wrote("u1", "10", dev("11", claim))

	stale := dev("10", nil)
	o.overlay(stale)
	if stale.Status.Upgrade == nil || stale.Status.Upgrade.Window != "a" || stale.ResourceVersion != "11" || !o.unseen("u1") {
		t.Fatalf("stale cache read as %+v at %s (unseen %t), want our claim at 11", stale.Status.Upgrade, stale.ResourceVersion, o.unseen("u1"))
	}
	stale.Status.Upgrade.Window = "changed"
	again := dev("10", nil)
	o.overlay(again)
	if again.Status.Upgrade.Window != "a" {
		t.Fatal("overlay hands out its own copy")
	}

	moved := dev("12", &itmv1.UpgradeStatus{State: itmv1.UpgradeStateInProgress, Window: "a"})
	o.overlay(moved)
	if moved.Status.Upgrade.State != itmv1.UpgradeStateInProgress || moved.ResourceVersion != "12" || o.unseen("u1") {
		t.Fatalf("moved cache read as %+v at %s, want the cache's own", moved.Status.Upgrade, moved.ResourceVersion)
	}
	back := dev("10", nil)
	o.overlay(back)
	if back.Status.Upgrade != nil {
		t.Fatal("entry outlived the cache moving on")
	}
	o.wrote("u1", "12", dev("13", claim))
	o.forget("u1")
	if o.unseen("u1") {
		t.Fatal("forget kept the entry")
	}
}

// TestADeletedDeviceLeavesNoUnseenClaim: the claim remembered for a Device
// goes when the Device's deletion is seen (nothing else would drop it: a
// deleted Device is never read again), and the deletion still reaches the
// windows; an update of the Device keeps it.
func TestADeletedDeviceLeavesNoUnseenClaim(t *testing.T) {
	r := &MaintenanceWindowReconciler{}
	d := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{UID: "u1", ResourceVersion: "11"},
		Status: itmv1.DeviceStatus{Upgrade: &itmv1.UpgradeStatus{State: itmv1.UpgradeStateAuthorized, Window: "a"}}}
	r.own.wrote("u1", "10", d)
	p := r.forgetDeletedDevices()
	if !p.Update(event.UpdateEvent{ObjectOld: d, ObjectNew: d}) || !r.own.unseen("u1") {
		t.Fatal("an update dropped the unseen claim")
	}
	if !p.Delete(event.DeleteEvent{Object: d}) {
		t.Error("the deletion does not reach the windows")
	}
	if r.own.unseen("u1") {
		t.Error("the deleted Device's claim is still remembered")
	}
}
