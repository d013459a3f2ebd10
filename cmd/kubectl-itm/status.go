package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
)

// status shows one person at a glance: their OnboardingRequest, accounts,
// devices, and what each AccessPolicy that names them grants, computed
// with the operator's own logic from live objects.
func status(ctx context.Context, c client.Client, devicesNS, user string, now time.Time, out io.Writer) error {
	r := &itmv1.OnboardingRequest{}
	if err := c.Get(ctx, types.NamespacedName{Name: user}, r); err != nil {
		return fmt.Errorf("get OnboardingRequest %s: %w", user, err)
	}
	fmt.Fprintf(out, "%s (%s, %s)\n", r.Name, r.Spec.Person.DisplayName, r.Spec.Person.Email)
	ready := meta.FindStatusCondition(r.Status.Conditions, itmv1.ConditionReady)
	phase := cmp.Or(string(r.Status.Phase), "not reconciled yet")
	if ready != nil && ready.Message != "" {
		phase += ": " + ready.Message
	}
	fmt.Fprintf(out, "  Phase:         %s\n", phase)
	fmt.Fprintf(out, "  Requested by:  %s\n", cmp.Or(r.Annotations[itmv1.AnnotationRequestedBy], "(no stamp)"))
	fmt.Fprintf(out, "  Approval:      %s\n", approval(r))
	if len(r.Spec.Groups) > 0 {
		fmt.Fprintf(out, "  Groups:        %s\n", strings.Join(r.Spec.Groups, ", "))
	}
	fmt.Fprintf(out, "  Providers:     %s\n", providersOf(ctx, c, r))
	if r.Spec.StartDate != nil || r.Spec.EndDate != nil {
		fmt.Fprintf(out, "  Dates:         %s to %s\n", dateOr(r.Spec.StartDate, "-"), dateOr(r.Spec.EndDate, "open-ended"))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)

	fmt.Fprintln(out, "\nConditions:")
	for _, t := range []string{itmv1.OnboardingConditionAccountsReady, itmv1.OnboardingConditionDevicesAssigned, itmv1.ConditionReady} {
		if c := meta.FindStatusCondition(r.Status.Conditions, t); c != nil {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t, c.Status, c.Reason, c.Message)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nAccounts:")
	if len(r.Status.Accounts) == 0 {
		fmt.Fprintln(out, "  none")
	} else {
		fmt.Fprintln(tw, "  PROVIDER\tSTATE\tID\tMESSAGE")
		for _, a := range r.Status.Accounts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.Provider, a.State, a.ID, a.Message)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s := r.Status.CredentialsSecret; s != nil {
		fmt.Fprintf(out, "  Credentials:   Secret %s/%s, key kubeconfig\n", s.Namespace, s.Name)
	}

	var devices itmv1.DeviceList
	if err := c.List(ctx, &devices); err != nil {
		return fmt.Errorf("list Devices: %w", err)
	}
	var mine []*itmv1.Device
	checkIns := map[string]*time.Time{}
	for i := range devices.Items {
		d := &devices.Items[i]
		if d.Spec.Assignee != user {
			continue
		}
		mine = append(mine, d)
		last, _, err := lastCheckIn(ctx, c, devicesNS, d)
		if err != nil {
			return err
		}
		checkIns[d.Name] = last
	}
	fmt.Fprintln(out, "\nDevices:")
	if len(mine) == 0 {
		fmt.Fprintln(out, "  none")
	} else {
		fmt.Fprintln(tw, "  NAME\tCLASS\tPHASE\tLAST CHECK-IN\tASSIGNED BY")
		for _, d := range mine {
			by := "someone else (not recorded by the request)"
			if slices.Contains(r.Status.Devices, d.Name) {
				by = "this request"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", d.Name, d.Spec.Class, cmp.Or(string(d.Status.Phase), "-"), ago(checkIns[d.Name], now), by)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	var policies itmv1.AccessPolicyList
	if err := c.List(ctx, &policies); err != nil {
		if apierrors.IsForbidden(err) {
			fmt.Fprintln(out, "\nAccess: (no permission to list AccessPolicies)")
			return nil
		}
		return fmt.Errorf("list AccessPolicies: %w", err)
	}
	slices.SortFunc(policies.Items, func(a, b itmv1.AccessPolicy) int { return strings.Compare(a.Name, b.Name) })
	fmt.Fprintln(out, "\nAccess:")
	named, granted := 0, 0
	requests := map[string]*itmv1.OnboardingRequest{user: r}
	for i := range policies.Items {
		p := &policies.Items[i]
		if !slices.Contains(p.Spec.Subjects.Users, user) && !intersects(p.Spec.Subjects.Groups, r.Spec.Groups) {
			continue
		}
		named++
		if !access.People(p.Spec.Subjects, requests)[user] {
			fmt.Fprintf(out, "  %s: names %s, but grants nothing while the request is %s\n", p.Name, user, cmp.Or(string(r.Status.Phase), "not Active"))
			continue
		}
		granted++
		for _, ka := range p.Spec.KubernetesAccess {
			where := "cluster-wide"
			if len(ka.Namespaces) > 0 {
				where = "in " + strings.Join(ka.Namespaces, ", ")
			}
			fmt.Fprintf(out, "  %s: ClusterRole %s %s\n", p.Name, ka.ClusterRole, where)
		}
		for _, d := range mine {
			v := access.Evaluate(access.Candidate{Device: d, LastCheckIn: checkIns[d.Name]}, p.Spec.Posture, now)
			verdict := "ALLOWED"
			if !v.Allowed {
				verdict = "DENIED: " + strings.Join(v.Reasons, "; ")
			}
			fmt.Fprintf(out, "  %s: device %s %s\n", p.Name, d.Name, verdict)
		}
	}
	if named == 0 {
		fmt.Fprintln(out, "  no AccessPolicy names this person or their groups")
	} else if granted > 0 && len(mine) > 0 {
		fmt.Fprintf(out, "\n  Details per requirement: kubectl itm why <device> <policy>\n")
	}
	return nil
}

func approval(r *itmv1.OnboardingRequest) string {
	for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
		if c := meta.FindStatusCondition(r.Status.Conditions, t); c != nil && c.Status == "True" {
			s := fmt.Sprintf("%s (%s) at %s", t, c.Reason, c.LastTransitionTime.UTC().Format(time.RFC3339))
			if c.Message != "" {
				s += ": " + c.Message
			}
			return s
		}
	}
	if r.Spec.ApprovalRequired != nil && !*r.Spec.ApprovalRequired {
		return "not required"
	}
	return "waiting for an approver (kubectl itm approve " + r.Name + ")"
}

func dateOr(t *metav1.Time, fallback string) string {
	if t == nil {
		return fallback
	}
	return t.UTC().Format(time.RFC3339)
}

func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return fmt.Sprintf("%s ago", now.Sub(*t).Truncate(time.Second))
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
