package onboarding

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// want is one condition as "Status/Reason: message"; "" for absent.
func condString(conds []metav1.Condition, t string) string {
	c := meta.FindStatusCondition(conds, t)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s: %s", c.Status, c.Reason, c.Message)
}

func accts(n int) []itmv1.AccountStatus {
	out := make([]itmv1.AccountStatus, n)
	for i := range out {
		out[i] = itmv1.AccountStatus{Provider: fmt.Sprint("p", i), State: itmv1.AccountStateProvisioned}
	}
	return out
}

// TestStatusMatrix has a row for every branch of the phase, AccountsReady,
// DevicesAssigned and Ready/Reconciling/Stalled decisions, with the exact
// reasons and messages (literals, as the contract names them).
func TestStatusMatrix(t *testing.T) {
	why := "the reason of the stage"
	cases := []struct {
		name  string
		stage Stage
		was   itmv1.OnboardingPhase
		p     Pass
		// Expected: phase, then AccountsReady, DevicesAssigned, Ready,
		// Reconciling, Stalled as "Status/Reason: message" ("" = absent).
		phase                                          itmv1.OnboardingPhase
		accounts, devices, ready, reconciling, stalled string
	}{
		{name: "offboard, everything undone: Offboarded", stage: Offboard, p: Pass{Accounts: accts(2)},
			phase: "Offboarded", accounts: "True/Offboarded: 2 account(s) disabled or deleted", devices: "True/Released: no device is assigned",
			ready: "True/Offboarded: " + why},
		{name: "offboard, a device still assigned: Offboarding, Releasing", stage: Offboard, p: Pass{Devices: []string{"lt-1", "lt-2"}},
			phase: "Offboarding", accounts: "True/Offboarded: 0 account(s) disabled or deleted", devices: "False/Releasing: still assigned: lt-1, lt-2",
			ready: "False/Offboarding: " + why, reconciling: "True/Offboarding: " + why},
		{name: "offboard, a device held by another field manager: ReleaseBlocked", stage: Offboard, p: Pass{Devices: []string{"lt-1"}, Held: []string{"Device lt-1: held"}},
			phase: "Offboarding", accounts: "True/Offboarded: 0 account(s) disabled or deleted", devices: "False/ReleaseBlocked: Device lt-1: held",
			ready: "False/Offboarding: " + why, reconciling: "True/Offboarding: " + why},
		{name: "offboard, forced, only held devices left: Offboarded", stage: Offboard, p: Pass{Force: true, Devices: []string{"lt-1"}, Held: []string{"Device lt-1: held"}},
			phase: "Offboarded", accounts: "True/Offboarded: 0 account(s) disabled or deleted", devices: "False/ReleaseBlocked: Device lt-1: held",
			ready: "True/Offboarded: " + why},
		{name: "offboard, blocked by a provider: OffboardingBlocked", stage: Offboard, p: Pass{Accounts: accts(1), Blocked: []string{"AccountProvider p0: down"}},
			phase: "Offboarding", accounts: "False/OffboardingBlocked: AccountProvider p0: down", devices: "True/Released: no device is assigned",
			ready: "False/Offboarding: AccountProvider p0: down", reconciling: "True/Offboarding: AccountProvider p0: down"},
		{name: "offboard, forced, skipped: ForceOffboarded", stage: Offboard, p: Pass{Force: true, Accounts: accts(1), Skipped: []string{"p0", "p1"}},
			phase: "Offboarded", accounts: "True/ForceOffboarded: skipped by itmanager.io/force-offboard: p0, p1", devices: "True/Released: no device is assigned",
			ready: "True/Offboarded: " + why},
		{name: "denied, nothing made: Failed, Stalled", stage: Denied, was: "AwaitingApproval", p: Pass{},
			phase: "Failed", accounts: "False/Denied: no account is created for a denied request", devices: "True/Released: no device is assigned",
			ready: "False/Denied: " + why + "; nothing is provisioned", stalled: "True/NeedsAttention: " + why + "; nothing is provisioned"},
		{name: "denied after accounts were made: undone", stage: Denied, was: "Active", p: Pass{Accounts: accts(1)},
			phase: "Failed", accounts: "True/Offboarded: 1 account(s) disabled or deleted", devices: "True/Released: no device is assigned",
			ready: "False/Denied: " + why + "; nothing is provisioned", stalled: "True/NeedsAttention: " + why + "; nothing is provisioned"},
		{name: "awaiting approval", stage: AwaitingApproval, p: Pass{},
			phase: "AwaitingApproval", accounts: "False/AwaitingApproval: no account is created before approval", devices: "False/AwaitingApproval: no device is assigned before approval",
			ready: "False/AwaitingApproval: " + why},
		{name: "awaiting approval with accounts recorded (undone)", stage: AwaitingApproval, p: Pass{Accounts: accts(1)},
			phase: "AwaitingApproval", accounts: "True/Offboarded: 1 account(s) disabled or deleted", devices: "False/AwaitingApproval: no device is assigned before approval",
			ready: "False/AwaitingApproval: " + why},
		{name: "active stays Active with a transient problem: Degraded", stage: Active, was: "Active", p: Pass{Accounts: accts(1), Transient: []string{"AccountProvider p0: down"}},
			phase: "Active", accounts: "False/ProvisioningFailed: AccountProvider p0: down", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Degraded: AccountProvider p0: down", reconciling: "True/ProvisioningFailed: AccountProvider p0: down"},
		{name: "active stays Active with a permanent problem: Degraded and Stalled", stage: Active, was: "Active", p: Pass{Accounts: accts(1), Permanent: []string{"AccountProvider p0: group"}},
			phase: "Active", accounts: "False/ProvisioningFailed: AccountProvider p0: group", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Degraded: AccountProvider p0: group", stalled: "True/NeedsAttention: AccountProvider p0: group"},
		{name: "active stays Active with an unmet device request: Degraded", stage: Active, was: "Active", p: Pass{Accounts: accts(1), Unmet: []string{"spec.devices[0]: none"}},
			phase: "Active", accounts: "True/Provisioned: 1 account(s) provisioned", devices: "False/DeviceUnavailable: spec.devices[0]: none",
			ready: "False/Degraded: spec.devices[0]: none"},
		{name: "permanent before Active: Failed, Stalled", stage: Active, was: "Provisioning", p: Pass{Permanent: []string{"AccountProvider p0: taken"}, Transient: []string{"AccountProvider p1: down"}},
			phase: "Failed", accounts: "False/ProvisioningFailed: AccountProvider p0: taken; AccountProvider p1: down", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Failed: AccountProvider p0: taken; AccountProvider p1: down", stalled: "True/NeedsAttention: AccountProvider p0: taken; AccountProvider p1: down"},
		{name: "missing provider only: Pending, ProviderNotFound", stage: Active, p: Pass{Missing: []string{"p9"}},
			phase: "Pending", accounts: "False/ProviderNotFound: AccountProvider p9 does not exist", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Pending: AccountProvider p9 does not exist", reconciling: "True/Pending: AccountProvider p9 does not exist"},
		{name: "missing provider and a transient error: ProvisioningFailed", stage: Active, p: Pass{Missing: []string{"p9"}, Transient: []string{"AccountProvider p0: down"}},
			phase: "Pending", accounts: "False/ProvisioningFailed: AccountProvider p0: down; AccountProvider p9 does not exist", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Pending: AccountProvider p0: down; AccountProvider p9 does not exist", reconciling: "True/Pending: AccountProvider p0: down; AccountProvider p9 does not exist"},
		{name: "scheduled: CreatedDisabled, Ready", stage: Scheduled, p: Pass{Accounts: accts(2)},
			phase: "Scheduled", accounts: "True/CreatedDisabled: 2 account(s) exist, disabled until spec.startDate", devices: "True/Assigned: 0 device(s) assigned",
			ready: "True/Scheduled: " + why},
		{name: "scheduled with an unmet device: not Ready", stage: Scheduled, p: Pass{Accounts: accts(1), Unmet: []string{"spec.devices[0]: none"}},
			phase: "Scheduled", accounts: "True/CreatedDisabled: 1 account(s) exist, disabled until spec.startDate", devices: "False/DeviceUnavailable: spec.devices[0]: none",
			ready: "False/Scheduled: " + why},
		{name: "scheduled with a transient error: not Ready, Reconciling while retried", stage: Scheduled, p: Pass{Transient: []string{"AccountProvider p0: down"}},
			phase: "Scheduled", accounts: "False/ProvisioningFailed: AccountProvider p0: down", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Scheduled: " + why, reconciling: "True/ProvisioningFailed: " + why},
		{name: "everything in place: Active", stage: Active, was: "Provisioning", p: Pass{Accounts: accts(1), Devices: []string{"lt-1"}},
			phase: "Active", accounts: "True/Provisioned: 1 account(s) provisioned", devices: "True/Assigned: 1 device(s) assigned",
			ready: "True/Active: accounts provisioned, devices assigned"},
		{name: "a transient error before Active: Provisioning", stage: Active, p: Pass{Transient: []string{"AccountProvider p0: down"}},
			phase: "Provisioning", accounts: "False/ProvisioningFailed: AccountProvider p0: down", devices: "True/Assigned: 0 device(s) assigned",
			ready: "False/Provisioning: AccountProvider p0: down", reconciling: "True/Provisioning: AccountProvider p0: down"},
		{name: "an unmet device before Active: Provisioning", stage: Active, p: Pass{Accounts: accts(1), Unmet: []string{"spec.devices[0]: none"}},
			phase: "Provisioning", accounts: "True/Provisioned: 1 account(s) provisioned", devices: "False/DeviceUnavailable: spec.devices[0]: none",
			ready: "False/Provisioning: spec.devices[0]: none", reconciling: "True/Provisioning: spec.devices[0]: none"},
		{name: "the problem order: permanent, blocked, transient, missing; Stalled, never Reconciling too", stage: Offboard, p: Pass{Permanent: []string{"P"}, Blocked: []string{"B"}, Transient: []string{"T"}, Missing: []string{"m"}},
			phase: "Offboarding", accounts: "False/OffboardingBlocked: P; B; T; AccountProvider m does not exist", devices: "True/Released: no device is assigned",
			ready:   "False/Offboarding: P; B; T; AccountProvider m does not exist",
			stalled: "True/NeedsAttention: P; B; T; AccountProvider m does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
			r.Status.Phase = c.was
			p := c.p
			st := Status(r, Decision{Stage: c.stage, Why: why}, &p, now)
			if st.Phase != c.phase {
				t.Errorf("phase %q, want %q", st.Phase, c.phase)
			}
			for _, w := range []struct{ t, want string }{
				{"AccountsReady", c.accounts}, {"DevicesAssigned", c.devices}, {"Ready", c.ready},
				{"Reconciling", c.reconciling}, {"Stalled", c.stalled},
			} {
				if got := condString(st.Conditions, w.t); got != w.want {
					t.Errorf("%s = %q\n want %q", w.t, got, w.want)
				}
			}
			if st.ObservedGeneration != 3 {
				t.Errorf("observedGeneration %d, want 3", st.ObservedGeneration)
			}
			for _, cd := range st.Conditions {
				if cd.ObservedGeneration != 3 || !cd.LastTransitionTime.Time.Equal(now) {
					t.Errorf("%s: generation %d at %v, want 3 at %v", cd.Type, cd.ObservedGeneration, cd.LastTransitionTime, now)
				}
			}
		})
	}
}

func TestStatusKeepsWhatItDoesNotDecide(t *testing.T) {
	approved := metav1.Condition{Type: "Approved", Status: metav1.ConditionTrue, Reason: "ByTest", Message: "m", ObservedGeneration: 1,
		LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}
	ready := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Active", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}
	defaults := &itmv1.DefaultProviders{Names: []string{"p0"}, FixedAt: metav1.NewTime(now.Add(-time.Hour))}
	r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Status: itmv1.OnboardingRequestStatus{
		Phase: "Active", Conditions: []metav1.Condition{approved, ready}, DefaultProviders: defaults,
	}}
	st := Status(r, Decision{Stage: Active}, &Pass{Accounts: accts(1)}, now)
	if c := meta.FindStatusCondition(st.Conditions, "Approved"); c == nil || *c != approved {
		t.Errorf("Approved = %+v, want unchanged %+v", c, approved)
	}
	if c := meta.FindStatusCondition(st.Conditions, "Ready"); !c.LastTransitionTime.Time.Equal(now.Add(-time.Hour)) || c.ObservedGeneration != 2 {
		t.Errorf("Ready moved its transition time or kept the old generation: %+v", c)
	}
	if !reflect.DeepEqual(st.DefaultProviders, defaults) {
		t.Errorf("defaultProviders %+v, want kept", st.DefaultProviders)
	}
}

func TestStatusCredentialsOnlyWhileActive(t *testing.T) {
	old := &itmv1.ObjectReference{Namespace: "u", Name: "old"}
	fresh := &itmv1.ObjectReference{Namespace: "u", Name: "fresh"}
	for name, tc := range map[string]struct {
		stage Stage
		p     Pass
		want  *itmv1.ObjectReference
	}{
		"active, issued": {Active, Pass{Credentials: fresh}, fresh},
		"active, a provider did not answer: kept": {Active, Pass{Transient: []string{"x"}}, old},
		"active, none issued, no failure: none":   {Active, Pass{}, nil},
		"active, permanent failure: none":         {Active, Pass{Permanent: []string{"x"}}, nil},
		"scheduled: none":                         {Scheduled, Pass{Credentials: fresh, Transient: []string{"x"}}, nil},
		"offboard: none":                          {Offboard, Pass{Credentials: fresh, Transient: []string{"x"}}, nil},
	} {
		r := &itmv1.OnboardingRequest{Status: itmv1.OnboardingRequestStatus{CredentialsSecret: old}}
		p := tc.p
		if got := Status(r, Decision{Stage: tc.stage}, &p, now).CredentialsSecret; got != tc.want {
			t.Errorf("%s: credentialsSecret %v, want %v", name, got, tc.want)
		}
	}
}

func TestPhaseEvent(t *testing.T) {
	status := func(ph itmv1.OnboardingPhase, readyMsg string) *itmv1.OnboardingRequestStatus {
		return &itmv1.OnboardingRequestStatus{Phase: ph, Conditions: []metav1.Condition{{Type: "Ready", Status: "False", Reason: "X", Message: readyMsg}}}
	}
	for name, tc := range map[string]struct {
		from, to *itmv1.OnboardingRequestStatus
		p        Pass
		want     Event
		sent     bool
	}{
		"no change of phase: nothing":  {status("Active", "a"), status("Active", "b"), Pass{}, Event{}, false},
		"Active":                       {status("Provisioning", ""), status("Active", "ok"), Pass{}, Event{corev1.EventTypeNormal, "Active", "ok"}, true},
		"Failed: a warning":            {status("Provisioning", ""), status("Failed", "taken"), Pass{}, Event{corev1.EventTypeWarning, "Failed", "taken"}, true},
		"Offboarding, blocked: warns":  {status("Active", ""), status("Offboarding", "down"), Pass{Blocked: []string{"x"}}, Event{corev1.EventTypeWarning, "Offboarding", "down"}, true},
		"Offboarding, not blocked":     {status("Active", ""), status("Offboarding", "releasing"), Pass{}, Event{corev1.EventTypeNormal, "Offboarding", "releasing"}, true},
		"Offboarded, skipped by force": {status("Offboarding", ""), status("Offboarded", "done"), Pass{Skipped: []string{"p0", "p1"}}, Event{corev1.EventTypeNormal, "Offboarded", "done; skipped by force-offboard: p0, p1"}, true},
		"first phase":                  {&itmv1.OnboardingRequestStatus{}, status("AwaitingApproval", "wait"), Pass{}, Event{corev1.EventTypeNormal, "AwaitingApproval", "wait"}, true},
	} {
		p := tc.p
		got, sent := PhaseEvent(tc.from, tc.to, &p)
		if sent != tc.sent || got != tc.want {
			t.Errorf("%s: %+v (%v), want %+v (%v)", name, got, sent, tc.want, tc.sent)
		}
	}
}
