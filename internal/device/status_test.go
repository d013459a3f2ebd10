package device

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := now.Add(d); return &t }

func laptop(mutate func(*itmv1.Device)) *itmv1.Device {
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: "lt-1", Generation: 3},
		Spec: itmv1.DeviceSpec{
			Class: itmv1.DeviceClassLaptop, Lifecycle: itmv1.DeviceLifecycleActive,
			OS:    &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"},
			Agent: &itmv1.AgentSpec{Enabled: true},
		},
	}
	if mutate != nil {
		mutate(d)
	}
	return d
}

func withCheckedIn(status metav1.ConditionStatus, last time.Time) func(*itmv1.Device) {
	return func(d *itmv1.Device) {
		d.Status.LastCheckIn = &metav1.Time{Time: last}
		d.Status.Conditions = []metav1.Condition{{Type: itmv1.DeviceConditionCheckedIn, Status: status,
			Reason: "x", LastTransitionTime: metav1.NewTime(last)}}
	}
}

func TestEvaluateCheckedIn(t *testing.T) {
	tests := map[string]struct {
		device      *itmv1.Device
		renew       *time.Time
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantRequeue time.Duration
		wantLast    *time.Time
		wantMessage string
	}{
		"never checked in": {
			device: laptop(nil), wantStatus: metav1.ConditionFalse, wantReason: itmv1.ReasonNeverCheckedIn,
		},
		"fresh check-in requeues for the exact instant it goes stale": {
			device: laptop(nil), renew: at(-90 * time.Second),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 5*time.Minute - 90*time.Second, wantLast: at(-90 * time.Second),
		},
		"exactly at the threshold is stale (half-open)": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-5*time.Minute))), renew: at(-5 * time.Minute),
			wantStatus: metav1.ConditionFalse, wantReason: itmv1.ReasonCheckInStale, wantLast: at(-5 * time.Minute),
			wantMessage: "last check-in 2026-11-22T09:55:00Z is older than 5m0s",
		},
		"one nanosecond before the threshold is fresh": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-5*time.Minute+1))), renew: at(-5*time.Minute + 1),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh, wantRequeue: 1, wantLast: at(-5*time.Minute + 1),
		},
		"renewal within the refresh interval leaves lastCheckIn alone": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-4*time.Minute))), renew: at(-10 * time.Second),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 5*time.Minute - 10*time.Second, wantLast: at(-4 * time.Minute),
		},
		"renewal past the refresh interval refreshes lastCheckIn": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-6*time.Minute))), renew: at(-30 * time.Second),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 5*time.Minute - 30*time.Second, wantLast: at(-30 * time.Second),
		},
		"stale device checking in again refreshes lastCheckIn at once": {
			device: laptop(withCheckedIn(metav1.ConditionFalse, now.Add(-3*time.Minute))), renew: at(-1 * time.Second),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 5*time.Minute - time.Second, wantLast: at(-1 * time.Second),
		},
		"renew time in the future is ignored": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-6*time.Minute))), renew: at(time.Hour),
			wantStatus: metav1.ConditionFalse, wantReason: itmv1.ReasonCheckInStale, wantLast: at(-6 * time.Minute),
		},
		"renew time within the clock skew counts": {
			device: laptop(nil), renew: at(2 * time.Second),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 5*time.Minute + 2*time.Second, wantLast: at(2 * time.Second),
		},
		"future renew time and no history is never checked in": {
			device: laptop(nil), renew: at(time.Hour), wantStatus: metav1.ConditionFalse, wantReason: itmv1.ReasonNeverCheckedIn,
		},
		"no renew time falls back to the recorded lastCheckIn": {
			device:     laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-time.Minute))),
			wantStatus: metav1.ConditionTrue, wantReason: itmv1.ReasonCheckInFresh,
			wantRequeue: 4 * time.Minute, wantLast: at(-time.Minute),
		},
		"a recorded lastCheckIn beyond the clock skew does not count": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(time.Hour))), renew: at(2 * time.Hour),
			wantStatus: metav1.ConditionFalse, wantReason: itmv1.ReasonCheckInStale, wantLast: at(time.Hour),
			wantMessage: "last check-in 2026-11-22T11:00:00Z lies in the future",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := Evaluate(Input{Device: tc.device, RenewTime: tc.renew, Now: now, StaleAfter: 5 * time.Minute, RefreshEvery: 5 * time.Minute})
			c := meta.FindStatusCondition(res.Status.Conditions, itmv1.DeviceConditionCheckedIn)
			if c == nil || c.Status != tc.wantStatus || c.Reason != tc.wantReason {
				t.Fatalf("CheckedIn = %+v, want %s/%s", c, tc.wantStatus, tc.wantReason)
			}
			if tc.wantMessage != "" && c.Message != tc.wantMessage {
				t.Errorf("message = %q, want %q", c.Message, tc.wantMessage)
			}
			if c.ObservedGeneration != 3 {
				t.Errorf("condition observedGeneration = %d, want 3", c.ObservedGeneration)
			}
			if res.RequeueAfter != tc.wantRequeue {
				t.Errorf("RequeueAfter = %s, want %s", res.RequeueAfter, tc.wantRequeue)
			}
			switch {
			case tc.wantLast == nil && res.Status.LastCheckIn != nil:
				t.Errorf("lastCheckIn = %s, want none", res.Status.LastCheckIn)
			case tc.wantLast != nil && (res.Status.LastCheckIn == nil || !res.Status.LastCheckIn.Time.Equal(*tc.wantLast)):
				t.Errorf("lastCheckIn = %v, want %s", res.Status.LastCheckIn, tc.wantLast)
			}
		})
	}
}

func TestEvaluateKeepsTransitionTimeWhenUnchanged(t *testing.T) {
	earlier := now.Add(-time.Hour)
	d := laptop(withCheckedIn(metav1.ConditionTrue, earlier))
	res := Evaluate(Input{Device: d, RenewTime: at(-time.Second), Now: now, StaleAfter: 5 * time.Minute, RefreshEvery: 5 * time.Minute})
	c := meta.FindStatusCondition(res.Status.Conditions, itmv1.DeviceConditionCheckedIn)
	if !c.LastTransitionTime.Time.Equal(earlier) {
		t.Fatalf("lastTransitionTime moved to %s though CheckedIn stayed True", c.LastTransitionTime)
	}
	// Evaluating the result again writes nothing new: a steady device costs
	// no API writes.
	d.Status = res.Status
	again := Evaluate(Input{Device: d, RenewTime: at(-time.Second), Now: now.Add(time.Second), StaleAfter: 5 * time.Minute, RefreshEvery: 5 * time.Minute})
	if !statusEqual(again.Status, res.Status) {
		t.Fatalf("a second evaluation changed the status:\n%+v\n%+v", res.Status, again.Status)
	}
}

func statusEqual(a, b itmv1.DeviceStatus) bool {
	if len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i] != b.Conditions[i] {
			return false
		}
	}
	return a.Phase == b.Phase && a.LastCheckIn.Equal(b.LastCheckIn) && a.ObservedGeneration == b.ObservedGeneration
}

func TestPhase(t *testing.T) {
	tests := map[string]struct {
		mutate func(*itmv1.Device)
		want   itmv1.DevicePhase
	}{
		"available":                  {nil, itmv1.DevicePhaseAvailable},
		"assigned":                   {func(d *itmv1.Device) { d.Spec.Assignee = "jdoe" }, itmv1.DevicePhaseAssigned},
		"retired wins over assigned": {func(d *itmv1.Device) { d.Spec.Assignee = "jdoe"; d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired }, itmv1.DevicePhaseRetired},
		"lost wins over assigned":    {func(d *itmv1.Device) { d.Spec.Assignee = "jdoe"; d.Spec.Lifecycle = itmv1.DeviceLifecycleLost }, itmv1.DevicePhaseLost},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Phase(laptop(tc.mutate)); got != tc.want {
				t.Fatalf("Phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestUpToDateAndReady(t *testing.T) {
	tests := map[string]struct {
		device                *itmv1.Device
		renew                 *time.Time
		conflicts             map[string][]string
		ranges                []netip.Prefix
		wantUpToDate          metav1.ConditionStatus
		wantUpToDateReason    string
		wantReady             metav1.ConditionStatus
		wantReadyReason       string
		wantReadyMessageParts []string
	}{
		"observed equals target": {
			device: laptop(func(d *itmv1.Device) { d.Status.Observed = &itmv1.ObservedFacts{OSVersion: "24.04"} }), renew: at(-time.Second),
			wantUpToDate: metav1.ConditionTrue, wantUpToDateReason: itmv1.ReasonVersionMatches,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonDeviceCheckedIn,
		},
		"observed differs": {
			device: laptop(func(d *itmv1.Device) { d.Status.Observed = &itmv1.ObservedFacts{OSVersion: "22.04"} }), renew: at(-time.Second),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionDiffers,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonDeviceCheckedIn,
		},
		"unknown observed version fails closed": {
			device: laptop(nil), renew: at(-time.Second),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonDeviceCheckedIn,
		},
		"no target is up to date; an enrolled agent that never checked in is Ready (CheckedIn tells)": {
			device:       laptop(func(d *itmv1.Device) { d.Spec.OS = nil }),
			wantUpToDate: metav1.ConditionTrue, wantUpToDateReason: itmv1.ReasonNoTargetVersion,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonAwaitingCheckIn,
		},
		"server without agent is ready without check-ins": {
			device:       laptop(func(d *itmv1.Device) { d.Spec.Class = itmv1.DeviceClassServer; d.Spec.Agent = nil }),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonNoCheckInNeeded,
		},
		"retired": {
			device:       laptop(func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired }),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonDeviceRetired,
		},
		"address conflict": {
			device: laptop(nil), renew: at(-time.Second),
			conflicts:    map[string][]string{"10.0.0.9": {"lt-7"}, "10.0.0.5": {"lt-2", "lt-3"}},
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionFalse, wantReadyReason: itmv1.ReasonAddressConflict,
			wantReadyMessageParts: []string{"10.0.0.5 (also claimed by lt-2, lt-3); 10.0.0.9 (also claimed by lt-7)"},
		},
		"a static address outside --agent-address-cidrs is not ready and named": {
			device: laptop(func(d *itmv1.Device) {
				d.Spec.Class, d.Spec.Agent, d.Spec.Addresses = itmv1.DeviceClassServer, nil, []string{"192.0.2.7", "10.0.0.7"}
			}),
			ranges:       prefixes("10.0.0.0/8"),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionFalse, wantReadyReason: itmv1.ReasonAddressOutsideRanges,
			wantReadyMessageParts: []string{"addresses outside the allowed ranges (--agent-address-cidrs) do not count: 192.0.2.7"},
		},
		"the same static address without ranges is fine": {
			device: laptop(func(d *itmv1.Device) {
				d.Spec.Class, d.Spec.Agent, d.Spec.Addresses = itmv1.DeviceClassServer, nil, []string{"192.0.2.7", "10.0.0.7"}
			}),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonNoCheckInNeeded,
		},
		"a conflict and an address outside the ranges are both said": {
			device:       laptop(func(d *itmv1.Device) { d.Spec.Addresses = []string{"192.0.2.7", "10.0.0.5"} }),
			renew:        at(-time.Second),
			conflicts:    map[string][]string{"10.0.0.5": {"lt-2"}},
			ranges:       prefixes("10.0.0.0/8"),
			wantUpToDate: metav1.ConditionFalse, wantUpToDateReason: itmv1.ReasonVersionUnknown,
			wantReady: metav1.ConditionFalse, wantReadyReason: itmv1.ReasonAddressConflict,
			wantReadyMessageParts: []string{"10.0.0.5 (also claimed by lt-2)", "do not count: 192.0.2.7"},
		},
		"a discovered Node's own addresses are not judged by the agent ranges": {
			device: nodeDevice("worker-1", "a", nil), renew: at(-time.Second),
			ranges:       prefixes("10.0.0.0/8"),
			wantUpToDate: metav1.ConditionTrue, wantUpToDateReason: itmv1.ReasonNoTargetVersion,
			wantReady: metav1.ConditionTrue, wantReadyReason: itmv1.ReasonDeviceCheckedIn,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res := Evaluate(Input{Device: tc.device, RenewTime: tc.renew, Conflicts: tc.conflicts, AddressRanges: tc.ranges,
				Now: now, StaleAfter: 5 * time.Minute, RefreshEvery: 5 * time.Minute})
			u := meta.FindStatusCondition(res.Status.Conditions, itmv1.DeviceConditionUpToDate)
			if u.Status != tc.wantUpToDate || u.Reason != tc.wantUpToDateReason {
				t.Errorf("UpToDate = %s/%s (%s), want %s/%s", u.Status, u.Reason, u.Message, tc.wantUpToDate, tc.wantUpToDateReason)
			}
			r := meta.FindStatusCondition(res.Status.Conditions, itmv1.ConditionReady)
			if r.Status != tc.wantReady || r.Reason != tc.wantReadyReason {
				t.Errorf("Ready = %s/%s (%s), want %s/%s", r.Status, r.Reason, r.Message, tc.wantReady, tc.wantReadyReason)
			}
			for _, p := range tc.wantReadyMessageParts {
				if !strings.Contains(r.Message, p) {
					t.Errorf("Ready message %q lacks %q", r.Message, p)
				}
			}
		})
	}
}

func TestNodeFacts(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "worker-1", Labels: map[string]string{}},
		Status: corev1.NodeStatus{
			NodeInfo: corev1.NodeSystemInfo{OSImage: "Debian GNU/Linux 12 (bookworm)", KubeletVersion: "v1.36.3"},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "10.0.0.12"},
				{Type: corev1.NodeHostName, Address: "worker-1"},
				{Type: corev1.NodeExternalIP, Address: "2001:db8::12"},
				{Type: corev1.NodeInternalIP, Address: "10.0.0.12"},
				{Type: corev1.NodeInternalIP, Address: "not-an-ip"},
				{Type: corev1.NodeInternalDNS, Address: "worker-1.internal"},
			},
		},
	}
	f := NodeFacts(node)
	if f.OSVersion != "Debian GNU/Linux 12 (bookworm)" || f.Hostname != "worker-1" || f.AgentVersion != "v1.36.3" {
		t.Errorf("facts = %+v", f)
	}
	if strings.Join(f.Addresses, ",") != "10.0.0.12,2001:db8::12" {
		t.Errorf("addresses = %v", f.Addresses)
	}
	node.Labels[itmv1.LabelOSVersion] = "12.7"
	if got := NodeFacts(node).OSVersion; got != "12.7" {
		t.Errorf("label did not override osImage: %q", got)
	}
}

// TestReadyIsReconciledNotCheckedIn: a Device's Ready (DESIGN §3) means
// reconciled with no problem of itmanager's making; a device that sleeps
// stays Ready. Each row names the kstatus verdict the summary leads to.
func TestReadyIsReconciledNotCheckedIn(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	tests := map[string]struct {
		device               *itmv1.Device
		renew                *time.Time
		in                   Input
		ready                bool
		reason               string
		reconciling, stalled bool
	}{
		"an enrolled laptop asleep for a week is Ready (Current)": {
			device: laptop(withCheckedIn(metav1.ConditionTrue, now.Add(-7*24*time.Hour))), renew: at(-7 * 24 * time.Hour),
			ready: true, reason: itmv1.ReasonReconciled,
		},
		"an enrolled laptop that never checked in is Ready (Current)": {
			device: laptop(nil), ready: true, reason: itmv1.ReasonAwaitingCheckIn,
		},
		"a laptop checking in is Ready (Current)": {
			device: laptop(nil), renew: at(-time.Second), ready: true, reason: itmv1.ReasonDeviceCheckedIn,
		},
		"an agent not yet enrolled is Reconciling (InProgress)": {
			device: laptop(nil), in: Input{Unenrolled: "not done"}, reason: itmv1.ReasonAwaitingEnrolment, reconciling: true,
		},
		"an enrolment Secret held by someone else is Stalled (Failed)": {
			device: laptop(nil), in: Input{Unenrolled: "not done", EnrolmentConflict: "taken"}, reason: itmv1.ReasonEnrolmentConflict, stalled: true,
		},
		"enrolment does not concern a device without agent": {
			device: laptop(func(d *itmv1.Device) { d.Spec.Agent = nil }), in: Input{Unenrolled: "not done"}, ready: true, reason: itmv1.ReasonNoCheckInNeeded,
		},
		"an address conflict is Stalled (Failed): a person resolves it": {
			device: laptop(nil), renew: at(-time.Second), in: Input{Conflicts: map[string][]string{"10.0.0.5": {"lt-2"}}},
			reason: itmv1.ReasonAddressConflict, stalled: true,
		},
		"an address outside the ranges is Stalled (Failed)": {
			device: laptop(func(d *itmv1.Device) { d.Spec.Addresses = []string{"192.0.2.7"} }), in: Input{AddressRanges: prefixes("10.0.0.0/8")},
			reason: itmv1.ReasonAddressOutsideRanges, stalled: true,
		},
		"a Node whose kubelet stopped renewing is Ready (Current)": {
			device: nodeDevice("worker-1", "a", nil), renew: at(-time.Hour), ready: true, reason: itmv1.ReasonReconciled,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			in.Device, in.RenewTime, in.Now, in.StaleAfter, in.RefreshEvery = tc.device, tc.renew, now, 5*time.Minute, 5*time.Minute
			st := Evaluate(in).Status
			r := meta.FindStatusCondition(st.Conditions, itmv1.ConditionReady)
			if r == nil || (r.Status == metav1.ConditionTrue) != tc.ready || r.Reason != tc.reason {
				t.Fatalf("Ready = %+v, want %v/%s", r, tc.ready, tc.reason)
			}
			if got := meta.IsStatusConditionTrue(st.Conditions, itmv1.ConditionReconciling); got != tc.reconciling {
				t.Errorf("Reconciling %v, want %v", got, tc.reconciling)
			}
			if got := meta.IsStatusConditionTrue(st.Conditions, itmv1.ConditionStalled); got != tc.stalled {
				t.Errorf("Stalled %v, want %v", got, tc.stalled)
			}
			if st.ObservedGeneration != tc.device.Generation {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, tc.device.Generation)
			}
		})
	}
}
