package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestStatus(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	approvedAt := metav1.NewTime(now.Add(-48 * time.Hour))
	r := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "ada", Annotations: map[string]string{itmv1.AnnotationRequestedBy: "hr@example.com"}},
		Spec:       itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: "Ada Lovelace", Email: "ada@example.com"}, Groups: []string{"eng"}},
		Status: itmv1.OnboardingRequestStatus{
			Phase: itmv1.OnboardingPhaseActive,
			Conditions: []metav1.Condition{
				{Type: itmv1.OnboardingConditionApproved, Status: metav1.ConditionTrue, Reason: "Approved", Message: "ok by it", LastTransitionTime: approvedAt},
				{Type: itmv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Active", Message: "accounts provisioned, devices assigned"},
			},
			Accounts:          []itmv1.AccountStatus{{Provider: "kube", ID: "ada", State: itmv1.AccountStateProvisioned}},
			Devices:           []string{"lt-1"},
			CredentialsSecret: &itmv1.ObjectReference{Namespace: "itmanager-users", Name: "ada-kubeconfig"},
		},
	}
	fresh := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: "ada", Addresses: []string{"10.1.0.7"},
		Agent: &itmv1.AgentSpec{Enabled: true}}}
	stale := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "ph-1"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassPhone, Assignee: "ada",
		Agent: &itmv1.AgentSpec{Enabled: true}}}
	other := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-2"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: "bob"}}
	lease := func(name string, age time.Duration) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: name},
			Spec: coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: now.Add(-age)}}}
	}
	policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki"}, Spec: itmv1.AccessPolicySpec{
		Subjects:         itmv1.Subjects{Groups: []string{"eng"}},
		Posture:          &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: 15 * time.Minute}},
		KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view", Namespaces: []string{"wiki"}}},
	}}
	unrelated := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "finance"}, Spec: itmv1.AccessPolicySpec{
		Subjects: itmv1.Subjects{Users: []string{"bob"}}}}
	c := fake.NewClientBuilder().WithScheme(newScheme()).
		WithObjects(r, fresh, stale, other, lease("lt-1", time.Minute), lease("ph-1", time.Hour), policy, unrelated).Build()

	var out bytes.Buffer
	if err := status(context.Background(), c, "itmanager-devices", "ada", now, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"ada (Ada Lovelace, ada@example.com)",
		"Phase:         Active: accounts provisioned, devices assigned",
		"Requested by:  hr@example.com",
		"Approval:      Approved (Approved) at 2026-11-20T09:00:00Z: ok by it",
		"kube      Provisioned  ada",
		"Credentials:   Secret itmanager-users/ada-kubeconfig, key kubeconfig",
		"lt-1  Laptop",
		"1m0s ago       this request",
		"ph-1  Phone",
		"someone else (not recorded by the request)",
		"wiki: ClusterRole view in wiki",
		"wiki: device lt-1 ALLOWED",
		"wiki: device ph-1 DENIED: last check-in 2026-11-22T08:00:00Z is older than 15m0s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"lt-2", "finance"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("output mentions %q, which is not ada's:\n%s", unwanted, got)
		}
	}

	// A person not yet Active is named but granted nothing.
	r.Status.Phase = itmv1.OnboardingPhaseAwaitingApproval
	r.Status.Conditions = nil
	r.ResourceVersion = ""
	c = fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(r, policy).Build()
	out.Reset()
	if err := status(context.Background(), c, "itmanager-devices", "ada", now, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"waiting for an approver (kubectl itm approve ada)", "wiki: names ada, but grants nothing while the request is AwaitingApproval", "Devices:\n  none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := status(context.Background(), c, "itmanager-devices", "nobody", now, &out); err == nil {
		t.Fatal("status of a missing person succeeded")
	}
}
