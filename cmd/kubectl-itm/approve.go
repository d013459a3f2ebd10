package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// decide sets Approved or Denied on an OnboardingRequest's status, as an
// approver. The API server's admission policies decide whether the caller
// may (the verb "approve", not the requester, never twice); their message
// is returned as it is.
func decide(ctx context.Context, c client.Client, name, conditionType, reason, message string, now time.Time, out io.Writer) error {
	if message == "" {
		message = "decided with kubectl itm"
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r := &itmv1.OnboardingRequest{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, r); err != nil {
			return err
		}
		for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
			if cond := meta.FindStatusCondition(r.Status.Conditions, t); cond != nil {
				return fmt.Errorf("OnboardingRequest %s is already %s (%s): a decision is final", name, t, cond.Message)
			}
		}
		meta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{
			Type: conditionType, Status: metav1.ConditionTrue, Reason: reason, Message: message,
			ObservedGeneration: r.Generation, LastTransitionTime: metav1.NewTime(now),
		})
		return c.Status().Update(ctx, r)
	})
	if err != nil {
		return fmt.Errorf("%s OnboardingRequest %s: %w", conditionType, name, err)
	}
	fmt.Fprintf(out, "onboardingrequest.itmanager.io/%s %s\n", name, map[string]string{
		itmv1.OnboardingConditionApproved: "approved", itmv1.OnboardingConditionDenied: "denied",
	}[conditionType])
	return nil
}
