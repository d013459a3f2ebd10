package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestWhy(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	renew := metav1.NewMicroTime(now.Add(-20 * time.Minute))
	policy := &itmv1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "wiki"},
		Spec: itmv1.AccessPolicySpec{
			Mode:     itmv1.AccessModeEnforce,
			Subjects: itmv1.Subjects{Groups: []string{"eng"}},
			Posture: &itmv1.Posture{
				MaxCheckInAge:         &metav1.Duration{Duration: 15 * time.Minute},
				RequireDiskEncryption: true,
			},
		},
	}
	alice := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "alice"},
		Spec:       itmv1.OnboardingRequestSpec{Groups: []string{"eng"}},
		Status:     itmv1.OnboardingRequestStatus{Phase: itmv1.OnboardingPhaseActive},
	}
	laptop := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: "lt-1"},
		Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: "alice", Agent: &itmv1.AgentSpec{Enabled: true}},
		Status: itmv1.DeviceStatus{Observed: &itmv1.ObservedFacts{
			Addresses: []string{"10.0.0.7"}, DiskEncrypted: ptr.To(true),
		}},
	}
	twin := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: "srv-2"},
		Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Addresses: []string{"10.0.0.7"}},
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: "lt-1"},
		Spec:       coordinationv1.LeaseSpec{RenewTime: &renew},
	}

	run := func(objs ...client.Object) string {
		t.Helper()
		c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(objs...).Build()
		var out bytes.Buffer
		if err := why(context.Background(), c, "itmanager-devices", "lt-1", "wiki", now, &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}

	out := run(policy, alice, laptop, lease)
	for _, want := range []string{
		"PASS  subjects",
		"assigned to alice, a member of group eng",
		"FAIL  maxCheckInAge",
		"last check-in 2026-11-21T09:40:00Z is older than 15m0s",
		"PASS  requireDiskEncryption",
		"Verdict: DENIED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	renew = metav1.NewMicroTime(now.Add(-time.Minute))
	out = run(policy, alice, laptop, lease)
	if !strings.Contains(out, "PASS  addresses") || !strings.Contains(out, "10.0.0.7") || !strings.Contains(out, "Verdict: ALLOWED") {
		t.Errorf("a fresh device should be allowed:\n%s", out)
	}

	out = run(policy, alice, laptop, lease, twin)
	if !strings.Contains(out, "address 10.0.0.7 is also claimed by srv-2") || !strings.Contains(out, "Verdict: DENIED") {
		t.Errorf("an address conflict should deny:\n%s", out)
	}

	gone := alice.DeepCopy()
	gone.Status.Phase = itmv1.OnboardingPhaseOffboarded
	out = run(policy, gone, laptop, lease)
	if !strings.Contains(out, "whose OnboardingRequest is Offboarded, not Active") || !strings.Contains(out, "Verdict: NOT SELECTED") {
		t.Errorf("an offboarded person's device is not selected:\n%s", out)
	}
}
