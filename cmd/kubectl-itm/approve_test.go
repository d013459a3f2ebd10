package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "amara.okafor", Generation: 3}}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(r).WithStatusSubresource(r).Build()

	var out bytes.Buffer
	if err := decide(context.Background(), c, "amara.okafor", itmv1.OnboardingConditionDenied, "NoContract", "no signed contract yet", now, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "onboardingrequest.itmanager.io/amara.okafor denied\n" {
		t.Fatalf("output %q", out.String())
	}
	got := &itmv1.OnboardingRequest{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(r), got); err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionDenied)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != "NoContract" || cond.Message != "no signed contract yet" ||
		cond.ObservedGeneration != 3 || !cond.LastTransitionTime.Time.Equal(now) {
		t.Fatalf("condition %+v", cond)
	}

	// A decision is final: approving afterwards is refused before any write.
	err := decide(context.Background(), c, "amara.okafor", itmv1.OnboardingConditionApproved, "Approved", "", now, &out)
	if err == nil || !strings.Contains(err.Error(), "already Denied") {
		t.Fatalf("second decision: %v", err)
	}
	if err := decide(context.Background(), c, "nobody", itmv1.OnboardingConditionApproved, "Approved", "", now, &out); err == nil {
		t.Fatal("deciding a missing request succeeded")
	}
}
