package rollout

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

const (
	none       = itmv1.UpgradeState("")
	pending    = itmv1.UpgradeStatePending
	authorized = itmv1.UpgradeStateAuthorized
	inProgress = itmv1.UpgradeStateInProgress
	succeeded  = itmv1.UpgradeStateSucceeded
	failed     = itmv1.UpgradeStateFailed
	bogus      = itmv1.UpgradeState("Bogus") // what a device may send
)

// TestTransitionTableIsExactlyTheContract walks every (actor, from, to) and
// compares with the moves written out here: a move added to or dropped
// from the table fails this test.
func TestTransitionTableIsExactlyTheContract(t *testing.T) {
	type move struct {
		actor    Actor
		from, to itmv1.UpgradeState
	}
	allowed := map[move]bool{
		// The window claims a free device: an agent is authorized, a Node
		// it drives itself goes straight to InProgress.
		{ActorWindow, none, authorized}: true, {ActorWindow, none, inProgress}: true,
		{ActorWindow, pending, authorized}: true, {ActorWindow, pending, inProgress}: true,
		{ActorWindow, succeeded, authorized}: true, {ActorWindow, succeeded, inProgress}: true,
		{ActorWindow, failed, authorized}: true, {ActorWindow, failed, inProgress}: true,
		// Timed out or its window deleted.
		{ActorWindow, authorized, failed}: true,
		// A Node's step ends, or timed out, or its window deleted.
		{ActorWindow, inProgress, succeeded}: true, {ActorWindow, inProgress, failed}: true,
		// A reported success that does not run the target.
		{ActorWindow, succeeded, failed}: true,
		// The device carries out its authorization, and only that.
		{ActorDevice, authorized, inProgress}: true,
		{ActorDevice, inProgress, succeeded}:  true,
		{ActorDevice, inProgress, failed}:     true,
	}
	states := []itmv1.UpgradeState{none, pending, authorized, inProgress, succeeded, failed, bogus}
	n := 0
	for _, actor := range []Actor{ActorWindow, ActorDevice} {
		for _, from := range states {
			for _, to := range states[1:] {
				want := Refused
				switch {
				case from == to:
					want = Same
				case allowed[move{actor, from, to}]:
					want = Allowed
				}
				if got := Transition(actor, from, to); got != want {
					t.Errorf("%s %q -> %q: %v, want %v", actor, from, to, got, want)
				}
				n++
			}
		}
	}
	if n != 2*7*6 {
		t.Fatalf("walked %d moves", n)
	}
}

func TestAuthorizesOnlyAnUpgradeUnderWay(t *testing.T) {
	for s, want := range map[itmv1.UpgradeState]bool{
		none: false, pending: false, authorized: true, inProgress: true, succeeded: false, failed: false,
	} {
		if got := Authorizes(s); got != want {
			t.Errorf("Authorizes(%q) = %t, want %t", s, got, want)
		}
	}
}

func TestReleaseWithdrawsOrFailsOnlyTheDeletedWindowsClaimsInFlight(t *testing.T) {
	now := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
	started := metav1.NewTime(now.Add(-time.Hour))
	dev := func(class itmv1.DeviceClass, state itmv1.UpgradeState, window string) *itmv1.Device {
		d := &itmv1.Device{Spec: itmv1.DeviceSpec{Class: class}}
		if state != none {
			d.Status.Upgrade = &itmv1.UpgradeStatus{State: state, Window: window, TargetVersion: "2.0", StartedAt: &started, Attempts: 3, Message: "m"}
		}
		return d
	}
	cases := []struct {
		name    string
		d       *itmv1.Device
		release bool
		message string
	}{
		{"no upgrade", dev(itmv1.DeviceClassLaptop, none, ""), false, ""},
		{"another window's authorization", dev(itmv1.DeviceClassLaptop, authorized, "other"), false, ""},
		{"another window's upgrade under way", dev(itmv1.DeviceClassNode, inProgress, "other"), false, ""},
		{"succeeded", dev(itmv1.DeviceClassLaptop, succeeded, "gone"), false, ""},
		{"failed", dev(itmv1.DeviceClassLaptop, failed, "gone"), false, ""},
		{"authorized, not started", dev(itmv1.DeviceClassLaptop, authorized, "gone"), true,
			"MaintenanceWindow gone was deleted before the upgrade started"},
		{"agent upgrade under way", dev(itmv1.DeviceClassLaptop, inProgress, "gone"), true,
			"MaintenanceWindow gone was deleted while the upgrade was in progress; its result is no longer awaited"},
		{"node upgrade under way: the cordon stays and says so", dev(itmv1.DeviceClassNode, inProgress, "gone"), true,
			"MaintenanceWindow gone was deleted while the upgrade was in progress; its result is no longer awaited; the node is left cordoned for inspection"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.d.DeepCopy()
			got := Release(c.d, "gone", now)
			if !c.release {
				if got != nil {
					t.Fatalf("Release = %+v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("Release = nil")
			}
			if got.State != failed || got.Message != c.message || got.FinishedAt == nil || !got.FinishedAt.Time.Equal(now) {
				t.Fatalf("Release = %s %q at %v, want Failed %q at %v", got.State, got.Message, got.FinishedAt, c.message, now)
			}
			if got.Window != "gone" || got.TargetVersion != "2.0" || got.Attempts != 3 || !got.StartedAt.Equal(&started) {
				t.Fatalf("Release changed the claim's record: %+v", got)
			}
			if Transition(ActorWindow, before.Status.Upgrade.State, got.State) != Allowed {
				t.Fatalf("Release makes a move the table refuses: %s -> %s", before.Status.Upgrade.State, got.State)
			}
			if c.d.Status.Upgrade.State != before.Status.Upgrade.State {
				t.Fatal("Release changed its input")
			}
		})
	}
}
