package rollout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var (
	now         = time.Date(2026, 11, 21, 2, 30, 0, 0, time.UTC)
	windowStart = time.Date(2026, 11, 21, 2, 0, 0, 0, time.UTC)
)

type devOpt func(*itmv1.Device)

func dev(name string, opts ...devOpt) *itmv1.Device {
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, OS: &itmv1.OSSpec{TargetVersion: "2.0"}},
		Status: itmv1.DeviceStatus{
			Observed:   &itmv1.ObservedFacts{OSVersion: "1.0"},
			Conditions: []metav1.Condition{{Type: itmv1.DeviceConditionCheckedIn, Status: metav1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

func silent(d *itmv1.Device)  { d.Status.Conditions[0].Status = metav1.ConditionFalse }
func current(d *itmv1.Device) { d.Status.Observed.OSVersion = "2.0" }
func upgrade(window string, state itmv1.UpgradeState, started, finished time.Duration) devOpt {
	return func(d *itmv1.Device) {
		d.Status.Upgrade = &itmv1.UpgradeStatus{State: state, Window: window, TargetVersion: "2.0",
			StartedAt: &metav1.Time{Time: now.Add(started)}}
		if finished != 0 {
			d.Status.Upgrade.FinishedAt = &metav1.Time{Time: now.Add(finished)}
		}
	}
}

func failedWith(message string) devOpt {
	return func(d *itmv1.Device) { d.Status.Upgrade.Message = message }
}

func fleet(n int, opts ...devOpt) []*itmv1.Device {
	var out []*itmv1.Device
	for i := range n {
		out = append(out, dev(fmt.Sprintf("d-%02d", i), opts...))
	}
	return out
}

func names(ds []*itmv1.Device) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Name)
	}
	return strings.Join(s, ",")
}

func TestCompute(t *testing.T) {
	spec := func(mu *intstr.IntOrString, mutate ...func(*itmv1.MaintenanceWindowSpec)) *itmv1.MaintenanceWindowSpec {
		s := &itmv1.MaintenanceWindowSpec{Rollout: itmv1.Rollout{MaxUnavailable: mu}}
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt32(int32(n)); return &v }
	open := func(in Input) Input {
		in.Open, in.CanStart, in.WindowStart, in.WindowEnd, in.Now, in.Window = true, true, windowStart, windowStart.Add(4*time.Hour), now, "w"
		return in
	}
	tests := map[string]struct {
		in          Input
		start       string
		timedOut    string
		counts      itmv1.UpgradeCounts
		blocked     string
		maxUnavail  int
		nextTimeout time.Time
	}{
		"10% of 25 rounds down to 2, in name order": {
			in:    open(Input{Spec: spec(pct("10%")), Devices: fleet(25)}),
			start: "d-00,d-01", counts: itmv1.UpgradeCounts{Pending: 23, InProgress: 2}, maxUnavail: 2,
		},
		"a percentage below one device still lets one through": {
			in:    open(Input{Spec: spec(pct("10%")), Devices: fleet(5)}),
			start: "d-00", counts: itmv1.UpgradeCounts{Pending: 4, InProgress: 1}, maxUnavail: 1,
		},
		"in-flight devices use up the budget; silent and current devices are skipped": {
			in: open(Input{Spec: spec(num(2)), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateInProgress, -10*time.Minute, 0)),
				dev("b", silent),
				dev("c", current),
				dev("d"), dev("e"),
			}}),
			start: "d", counts: itmv1.UpgradeCounts{Pending: 2, InProgress: 2}, maxUnavail: 2,
			nextTimeout: now.Add(50 * time.Minute),
		},
		"a device another window is upgrading counts against the budget and is not taken": {
			in: open(Input{Spec: spec(num(1)), Devices: []*itmv1.Device{
				dev("a", upgrade("other", itmv1.UpgradeStateAuthorized, -time.Minute, 0)), dev("b"),
			}}),
			counts: itmv1.UpgradeCounts{Pending: 2}, blocked: "maxUnavailable 1 reached by upgrades under other windows", maxUnavail: 1,
		},
		"upgradeTimeout fails an in-flight upgrade, also after the window closed": {
			in: Input{Window: "w", Now: now, Spec: spec(num(1)), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateAuthorized, -time.Hour, 0)),
			}},
			timedOut: "a", counts: itmv1.UpgradeCounts{InProgress: 1}, blocked: "outside window", maxUnavail: 1,
		},
		"failure budget exhausted in this window halts the rollout, naming the failed device and its reason": {
			in: open(Input{Spec: spec(num(3)), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateFailed, -20*time.Minute, -10*time.Minute), failedWith("upgrade Job itm-upgrade-a-1 failed: disk full")), dev("b"),
			}}),
			counts: itmv1.UpgradeCounts{Pending: 1, Failed: 1}, blocked: "failure budget: 1 failed in this window (maxFailures 1); last: a: upgrade Job itm-upgrade-a-1 failed: disk full", maxUnavail: 3,
		},
		"failure budget of 2: blockedBy names the later failure, whatever the order of the devices": {
			in: open(Input{Spec: spec(num(3), func(s *itmv1.MaintenanceWindowSpec) { s.Rollout.MaxFailures = ptr.To[int32](2) }), Devices: []*itmv1.Device{
				dev("z", upgrade("w", itmv1.UpgradeStateFailed, -20*time.Minute, -15*time.Minute), failedWith("first")),
				dev("a", upgrade("w", itmv1.UpgradeStateFailed, -20*time.Minute, -5*time.Minute), failedWith("second")),
				dev("b"),
			}}),
			counts: itmv1.UpgradeCounts{Pending: 1, Failed: 2}, blocked: "failure budget: 2 failed in this window (maxFailures 2); last: a: second", maxUnavail: 3,
		},
		"a failure in an earlier window is retried and does not count": {
			in: open(Input{Spec: spec(num(3)), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateFailed, -48*time.Hour, -47*time.Hour)), dev("b"),
			}}),
			start: "a,b", counts: itmv1.UpgradeCounts{InProgress: 2}, maxUnavail: 3,
		},
		"maxFailures 3 tolerates two": {
			in: open(Input{Spec: spec(num(1), func(s *itmv1.MaintenanceWindowSpec) { s.Rollout.MaxFailures = ptr.To[int32](3) }), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateFailed, -20*time.Minute, -10*time.Minute)),
				dev("b", upgrade("w", itmv1.UpgradeStateFailed, -20*time.Minute, -10*time.Minute)),
				dev("c"),
			}}),
			start: "c", counts: itmv1.UpgradeCounts{InProgress: 1, Failed: 2}, maxUnavail: 1,
		},
		"a success that does not run the target counts as a failure": {
			in: open(Input{Spec: spec(num(1)), Devices: []*itmv1.Device{
				dev("a", upgrade("w", itmv1.UpgradeStateSucceeded, -20*time.Minute, -10*time.Minute)), dev("b"),
			}}),
			counts: itmv1.UpgradeCounts{Pending: 1, Failed: 1}, blocked: "failure budget: 1 failed in this window (maxFailures 1); last: a", maxUnavail: 1,
		},
		"paused": {
			in:     open(Input{Spec: spec(num(1), func(s *itmv1.MaintenanceWindowSpec) { s.Paused = true }), Devices: fleet(2)}),
			counts: itmv1.UpgradeCounts{Pending: 2}, blocked: "paused", maxUnavail: 1,
		},
		"start cutoff": {
			in: func() Input {
				in := open(Input{Spec: spec(num(1)), Devices: fleet(2)})
				in.CanStart = false
				return in
			}(),
			counts: itmv1.UpgradeCounts{Pending: 2}, blocked: "start cutoff: no new device starts this close to the window's end 2026-11-21T06:00:00Z", maxUnavail: 1,
		},
		"blackout": {
			in:     Input{Window: "w", Now: now, Blackout: true, Spec: spec(num(1)), Devices: fleet(1)},
			counts: itmv1.UpgradeCounts{Pending: 1}, blocked: "blackout", maxUnavail: 1,
		},
		"closed: the last window's results are counted": {
			in: Input{Window: "w", Now: now, NextStart: now.Add(24 * time.Hour), Spec: spec(num(1)), Devices: []*itmv1.Device{
				dev("a", current, upgrade("w", itmv1.UpgradeStateSucceeded, -time.Hour, -50*time.Minute)),
				dev("b", upgrade("w", itmv1.UpgradeStateFailed, -time.Hour, -50*time.Minute)),
				dev("c"),
			}},
			counts: itmv1.UpgradeCounts{Pending: 1, Succeeded: 1, Failed: 1}, blocked: "outside window; next opens 2026-11-22T02:30:00Z", maxUnavail: 1,
		},
		"Node devices without spec.nodeUpgrade are not started, and that is said": {
			in: open(Input{Spec: spec(num(2)), Devices: []*itmv1.Device{
				dev("n-1", func(d *itmv1.Device) { d.Spec.Class = itmv1.DeviceClassNode }),
			}}),
			counts: itmv1.UpgradeCounts{Pending: 1}, blocked: "spec.nodeUpgrade is not set: 1 Node devices cannot be upgraded", maxUnavail: 2,
		},
		"retired devices are never started": {
			in:     open(Input{Spec: spec(num(5)), Devices: []*itmv1.Device{dev("a", func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })}}),
			counts: itmv1.UpgradeCounts{}, maxUnavail: 5,
		},
		"every device silent": {
			in:     open(Input{Spec: spec(num(5)), Devices: fleet(2, silent)}),
			counts: itmv1.UpgradeCounts{Pending: 2}, blocked: "2 devices pending, none checked in", maxUnavail: 5,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := Compute(tc.in)
			if got := names(p.Start); got != tc.start {
				t.Errorf("Start = %q, want %q", got, tc.start)
			}
			if got := names(p.TimedOut); got != tc.timedOut {
				t.Errorf("TimedOut = %q, want %q", got, tc.timedOut)
			}
			if p.Counts != tc.counts {
				t.Errorf("Counts = %+v, want %+v", p.Counts, tc.counts)
			}
			if p.BlockedBy != tc.blocked {
				t.Errorf("BlockedBy = %q, want %q", p.BlockedBy, tc.blocked)
			}
			if p.MaxUnavailable != tc.maxUnavail {
				t.Errorf("MaxUnavailable = %d, want %d", p.MaxUnavailable, tc.maxUnavail)
			}
			if !p.NextTimeout.Equal(tc.nextTimeout) {
				t.Errorf("NextTimeout = %s, want %s", p.NextTimeout, tc.nextTimeout)
			}
		})
	}
}

func TestResolveMaxUnavailable(t *testing.T) {
	for _, tc := range []struct {
		v     intstr.IntOrString
		total int
		want  int
	}{
		{intstr.FromString("10%"), 2000, 200}, {intstr.FromString("10%"), 19, 1}, {intstr.FromString("0%"), 50, 1},
		{intstr.FromInt32(0), 50, 1}, {intstr.FromInt32(7), 3, 7}, {intstr.FromString("100%"), 4, 4},
	} {
		if got := ResolveMaxUnavailable(&tc.v, tc.total); got != tc.want {
			t.Errorf("ResolveMaxUnavailable(%s, %d) = %d, want %d", tc.v.String(), tc.total, got, tc.want)
		}
	}
}
