package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// decide sets Approved or Denied on an OnboardingRequest's status, as an
// approver, for exactly the version it shows: it prints what is decided
// (person, groups, providers, devices, dates, generation), writes the
// condition with that generation as its observedGeneration, and writes it
// only if the request is still the version read (resourceVersion). When
// the request changed in between it fails and decides nothing: the
// decider reviews the new version and runs it again. The API server's
// admission policies decide whether the caller may (the verb "approve",
// not the requester, the current generation, never twice); their message
// is returned as it is.
func decide(ctx context.Context, c client.Client, name, conditionType, reason, message string, now time.Time, out io.Writer) error {
	if message == "" {
		message = "decided with kubectl itm"
	}
	r := &itmv1.OnboardingRequest{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, r); err != nil {
		return fmt.Errorf("%s OnboardingRequest %s: %w", conditionType, name, err)
	}
	for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
		if cond := meta.FindStatusCondition(r.Status.Conditions, t); cond != nil {
			return fmt.Errorf("OnboardingRequest %s is already %s (%s): a decision is final", name, t, cond.Message)
		}
	}
	verb := map[string]string{itmv1.OnboardingConditionApproved: "approved", itmv1.OnboardingConditionDenied: "denied"}[conditionType]
	doing := map[string]string{itmv1.OnboardingConditionApproved: "Approving", itmv1.OnboardingConditionDenied: "Denying"}[conditionType]
	fmt.Fprintf(out, "%s OnboardingRequest %s, generation %d, as it is now:\n", doing, name, r.Generation)
	describe(ctx, c, r, out)

	shown := r.Generation
	meta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{
		Type: conditionType, Status: metav1.ConditionTrue, Reason: reason, Message: message,
		ObservedGeneration: shown, LastTransitionTime: metav1.NewTime(now),
	})
	// r carries the resourceVersion read: a request changed since is a
	// conflict, never retried, since what changed was not shown.
	if err := c.Status().Update(ctx, r); err != nil {
		if apierrors.IsConflict(err) {
			return changedSince(ctx, c, name, conditionType, shown)
		}
		return fmt.Errorf("%s OnboardingRequest %s: %w", conditionType, name, err)
	}
	fmt.Fprintf(out, "onboardingrequest.itmanager.io/%s %s (generation %d)\n", name, verb, shown)
	return nil
}

// changedSince explains a refused decision on a request that changed
// after it was shown.
func changedSince(ctx context.Context, c client.Client, name, conditionType string, shown int64) error {
	now := &itmv1.OnboardingRequest{}
	what := "it changed"
	if err := c.Get(ctx, types.NamespacedName{Name: name}, now); err == nil {
		if now.Generation != shown {
			what = fmt.Sprintf("its spec changed (generation %d, shown %d)", now.Generation, shown)
		} else {
			what = fmt.Sprintf("its status or metadata changed (the spec shown, generation %d, is unchanged)", shown)
		}
	}
	return fmt.Errorf("%s OnboardingRequest %s: nothing was decided: the request changed after it was shown: %s; run the command again to review it as it is now",
		conditionType, name, what)
}

// describe prints what a decision is about.
func describe(ctx context.Context, c client.Client, r *itmv1.OnboardingRequest, out io.Writer) {
	p := r.Spec.Person
	person := p.DisplayName + " <" + p.Email + ">"
	var extra []string
	for _, s := range []string{p.Title, p.Department, string(p.EmploymentType)} {
		if s != "" {
			extra = append(extra, s)
		}
	}
	if p.Manager != "" {
		extra = append(extra, "manager "+p.Manager)
	}
	if len(extra) > 0 {
		person += " (" + strings.Join(extra, ", ") + ")"
	}
	fmt.Fprintf(out, "  Person:        %s\n", person)
	fmt.Fprintf(out, "  Requested by:  %s\n", cmp.Or(r.Annotations[itmv1.AnnotationRequestedBy], "(no stamp)"))
	fmt.Fprintf(out, "  Groups:        %s\n", listOrNone(r.Spec.Groups))
	fmt.Fprintf(out, "  Providers:     %s\n", providersOf(ctx, c, r))
	var devices []string
	for _, d := range r.Spec.Devices {
		switch {
		case d.Name != "":
			devices = append(devices, d.Name)
		case d.Selector != nil:
			devices = append(devices, fmt.Sprintf("any %s matching %s", d.Class, metav1.FormatLabelSelector(d.Selector)))
		default:
			devices = append(devices, "any "+string(d.Class))
		}
	}
	fmt.Fprintf(out, "  Devices:       %s\n", listOrNone(devices))
	fmt.Fprintf(out, "  Dates:         %s to %s\n", dateOr(r.Spec.StartDate, "now"), dateOr(r.Spec.EndDate, "open-ended"))
}

// providersOf names the providers a request asks for; when it names none,
// the providers marked default now, which approval fixes for it.
func providersOf(ctx context.Context, c client.Client, r *itmv1.OnboardingRequest) string {
	if len(r.Spec.AccountProviders) > 0 {
		return strings.Join(r.Spec.AccountProviders, ", ")
	}
	if d := r.Status.DefaultProviders; d != nil {
		return "defaults, fixed at " + d.FixedAt.UTC().Format(time.RFC3339) + ": " + listOrNone(d.Names)
	}
	var list itmv1.AccountProviderList
	if err := c.List(ctx, &list); err != nil {
		return "defaults (fixed at approval; cannot list AccountProviders: " + err.Error() + ")"
	}
	var names []string
	for _, p := range list.Items {
		if p.Spec.Default {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return "defaults, fixed at approval, now: " + listOrNone(names)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
