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
	"github.com/itmanager-io/itmanager/internal/access"
)

// StatusReport is what `kubectl itm status -o json|yaml` prints: one
// person at a glance.
type StatusReport struct {
	// User is the OnboardingRequest's name.
	User        string `json:"user"`
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
	// Phase is the request's status.phase (empty: not reconciled yet);
	// Message the Ready condition's message.
	Phase       string   `json:"phase"`
	Message     string   `json:"message,omitempty"`
	RequestedBy string   `json:"requestedBy,omitempty"`
	Approval    Approval `json:"approval"`
	Groups      []string `json:"groups"`
	// Providers says which AccountProviders the request provisions.
	Providers  string                `json:"providers"`
	StartDate  *time.Time            `json:"startDate,omitempty"`
	EndDate    *time.Time            `json:"endDate,omitempty"`
	Conditions []metav1.Condition    `json:"conditions"`
	Accounts   []itmv1.AccountStatus `json:"accounts"`
	// CredentialsSecret holds the person's kubeconfig (key "kubeconfig").
	CredentialsSecret *itmv1.ObjectReference `json:"credentialsSecret,omitempty"`
	Devices           []StatusDevice         `json:"devices"`
	// Access is one entry per AccessPolicy naming the person or one of
	// their groups; nil (absent) when the caller may not list policies.
	Access []PolicyAccess `json:"access,omitempty"`
	// AccessForbidden is true when the caller may not list AccessPolicies.
	AccessForbidden bool `json:"accessForbidden,omitempty"`
}

// Approval is the request's decision: State is Approved, Denied,
// NotRequired or Pending.
type Approval struct {
	State   string     `json:"state"`
	Reason  string     `json:"reason,omitempty"`
	Message string     `json:"message,omitempty"`
	At      *time.Time `json:"at,omitempty"`
}

// StatusDevice is one Device assigned to the person.
type StatusDevice struct {
	Name        string     `json:"name"`
	Class       string     `json:"class"`
	Phase       string     `json:"phase"`
	LastCheckIn *time.Time `json:"lastCheckIn,omitempty"`
	// AssignedByRequest is false when someone else set the assignee.
	AssignedByRequest bool `json:"assignedByRequest"`
}

// PolicyAccess is what one AccessPolicy grants the person.
type PolicyAccess struct {
	Policy string `json:"policy"`
	// Grants is false while the request is not in force (it names the
	// person, but grants nothing).
	Grants           bool                     `json:"grants"`
	KubernetesAccess []itmv1.KubernetesAccess `json:"kubernetesAccess,omitempty"`
	Devices          []DeviceVerdict          `json:"devices,omitempty"`
}

// DeviceVerdict is a policy's verdict on one of the person's devices.
type DeviceVerdict struct {
	Name    string   `json:"name"`
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons,omitempty"`
}

// statusReport gathers one person's request, accounts, devices, and what
// each AccessPolicy that names them grants, computed with the operator's
// own logic from live objects.
func statusReport(ctx context.Context, c client.Client, devicesNS, user string, now time.Time) (*StatusReport, error) {
	r := &itmv1.OnboardingRequest{}
	if err := c.Get(ctx, types.NamespacedName{Name: user}, r); err != nil {
		return nil, fmt.Errorf("get OnboardingRequest %s: %w", user, err)
	}
	rep := &StatusReport{
		User: r.Name, DisplayName: r.Spec.Person.DisplayName, Email: r.Spec.Person.Email,
		Phase: string(r.Status.Phase), RequestedBy: r.Annotations[itmv1.AnnotationRequestedBy],
		Approval: approvalOf(r), Groups: orEmpty(r.Spec.Groups), Providers: providersOf(ctx, c, r),
		StartDate: timeOf(r.Spec.StartDate), EndDate: timeOf(r.Spec.EndDate),
		Conditions: []metav1.Condition{}, Accounts: orEmpty(r.Status.Accounts),
		CredentialsSecret: r.Status.CredentialsSecret, Devices: []StatusDevice{},
	}
	if ready := meta.FindStatusCondition(r.Status.Conditions, itmv1.ConditionReady); ready != nil {
		rep.Message = ready.Message
	}
	for _, t := range []string{itmv1.OnboardingConditionAccountsReady, itmv1.OnboardingConditionDevicesAssigned, itmv1.ConditionReady} {
		if cond := meta.FindStatusCondition(r.Status.Conditions, t); cond != nil {
			rep.Conditions = append(rep.Conditions, *cond)
		}
	}

	var devices itmv1.DeviceList
	if err := c.List(ctx, &devices); err != nil {
		return nil, fmt.Errorf("list Devices: %w", err)
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
			return nil, err
		}
		checkIns[d.Name] = last
		rep.Devices = append(rep.Devices, StatusDevice{Name: d.Name, Class: string(d.Spec.Class), Phase: string(d.Status.Phase),
			LastCheckIn: last, AssignedByRequest: slices.Contains(r.Status.Devices, d.Name)})
	}

	var policies itmv1.AccessPolicyList
	if err := c.List(ctx, &policies); err != nil {
		if apierrors.IsForbidden(err) {
			rep.AccessForbidden = true
			return rep, nil
		}
		return nil, fmt.Errorf("list AccessPolicies: %w", err)
	}
	slices.SortFunc(policies.Items, func(a, b itmv1.AccessPolicy) int { return strings.Compare(a.Name, b.Name) })
	rep.Access = []PolicyAccess{}
	requests := map[string]*itmv1.OnboardingRequest{user: r}
	for i := range policies.Items {
		p := &policies.Items[i]
		if !slices.Contains(p.Spec.Subjects.Users, user) && !intersects(p.Spec.Subjects.Groups, r.Spec.Groups) {
			continue
		}
		pa := PolicyAccess{Policy: p.Name}
		if access.People(p.Spec.Subjects, requests)[user] {
			pa.Grants = true
			pa.KubernetesAccess = p.Spec.KubernetesAccess
			for _, d := range mine {
				v := access.Evaluate(access.Candidate{Device: d, LastCheckIn: checkIns[d.Name]}, p.Spec.Posture, now)
				pa.Devices = append(pa.Devices, DeviceVerdict{Name: d.Name, Allowed: v.Allowed, Reasons: v.Reasons})
			}
		}
		rep.Access = append(rep.Access, pa)
	}
	return rep, nil
}

// status prints statusReport as kubectl describe lays out an object.
func status(ctx context.Context, c client.Client, devicesNS, user string, now time.Time, out io.Writer) error {
	rep, err := statusReport(ctx, c, devicesNS, user, now)
	if err != nil {
		return err
	}
	return printStatus(rep, now, out)
}

func printStatus(rep *StatusReport, now time.Time, out io.Writer) error {
	fmt.Fprintf(out, "%s (%s, %s)\n", rep.User, rep.DisplayName, rep.Email)
	phase := cmp.Or(rep.Phase, "not reconciled yet")
	if rep.Message != "" {
		phase += ": " + rep.Message
	}
	fmt.Fprintf(out, "  Phase:         %s\n", phase)
	fmt.Fprintf(out, "  Requested by:  %s\n", cmp.Or(rep.RequestedBy, "(no stamp)"))
	fmt.Fprintf(out, "  Approval:      %s\n", approvalText(rep.User, rep.Approval))
	if len(rep.Groups) > 0 {
		fmt.Fprintf(out, "  Groups:        %s\n", strings.Join(rep.Groups, ", "))
	}
	fmt.Fprintf(out, "  Providers:     %s\n", rep.Providers)
	if rep.StartDate != nil || rep.EndDate != nil {
		fmt.Fprintf(out, "  Dates:         %s to %s\n", stampOr(rep.StartDate, "-"), stampOr(rep.EndDate, "open-ended"))
	}
	tw := newDescribe(out)

	fmt.Fprintln(out, "\nConditions:")
	for _, c := range rep.Conditions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nAccounts:")
	if len(rep.Accounts) == 0 {
		fmt.Fprintln(out, "  none")
	} else {
		fmt.Fprintln(tw, "  PROVIDER\tSTATE\tID\tMESSAGE")
		for _, a := range rep.Accounts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.Provider, a.State, a.ID, a.Message)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s := rep.CredentialsSecret; s != nil {
		fmt.Fprintf(out, "  Credentials:   Secret %s/%s, key kubeconfig\n", s.Namespace, s.Name)
	}

	fmt.Fprintln(out, "\nDevices:")
	if len(rep.Devices) == 0 {
		fmt.Fprintln(out, "  none")
	} else {
		fmt.Fprintln(tw, "  NAME\tCLASS\tPHASE\tLAST CHECK-IN\tASSIGNED BY")
		for _, d := range rep.Devices {
			by := "someone else (not recorded by the request)"
			if d.AssignedByRequest {
				by = "this request"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", d.Name, d.Class, cmp.Or(d.Phase, "-"), ago(d.LastCheckIn, now), by)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if rep.AccessForbidden {
		fmt.Fprintln(out, "\nAccess: (no permission to list AccessPolicies)")
		return nil
	}
	fmt.Fprintln(out, "\nAccess:")
	granted := 0
	for _, pa := range rep.Access {
		if !pa.Grants {
			fmt.Fprintf(out, "  %s: names %s, but grants nothing while the request is %s\n", pa.Policy, rep.User, cmp.Or(rep.Phase, "not Active"))
			continue
		}
		granted++
		for _, ka := range pa.KubernetesAccess {
			where := "cluster-wide"
			if len(ka.Namespaces) > 0 {
				where = "in " + strings.Join(ka.Namespaces, ", ")
			}
			fmt.Fprintf(out, "  %s: ClusterRole %s %s\n", pa.Policy, ka.ClusterRole, where)
		}
		for _, d := range pa.Devices {
			verdict := "ALLOWED"
			if !d.Allowed {
				verdict = "DENIED: " + strings.Join(d.Reasons, "; ")
			}
			fmt.Fprintf(out, "  %s: device %s %s\n", pa.Policy, d.Name, verdict)
		}
	}
	if len(rep.Access) == 0 {
		fmt.Fprintln(out, "  no AccessPolicy names this person or their groups")
	} else if granted > 0 && len(rep.Devices) > 0 {
		fmt.Fprintf(out, "\n  Details per requirement: kubectl itm why <device> <policy>\n")
	}
	return nil
}

func approvalOf(r *itmv1.OnboardingRequest) Approval {
	for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
		if c := meta.FindStatusCondition(r.Status.Conditions, t); c != nil && c.Status == metav1.ConditionTrue {
			at := c.LastTransitionTime.UTC()
			return Approval{State: t, Reason: c.Reason, Message: c.Message, At: &at}
		}
	}
	if r.Spec.ApprovalRequired != nil && !*r.Spec.ApprovalRequired {
		return Approval{State: "NotRequired"}
	}
	return Approval{State: "Pending"}
}

func approvalText(user string, a Approval) string {
	switch a.State {
	case "NotRequired":
		return "not required"
	case "Pending":
		return "waiting for an approver (kubectl itm approve " + user + ")"
	}
	s := fmt.Sprintf("%s (%s) at %s", a.State, a.Reason, a.At.Format(time.RFC3339))
	if a.Message != "" {
		s += ": " + a.Message
	}
	return s
}

func timeOf(t *metav1.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func stampOr(t *time.Time, fallback string) string {
	if t == nil {
		return fallback
	}
	return t.UTC().Format(time.RFC3339)
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

// orEmpty is l, or an empty list for nil: JSON shows [] rather than null.
func orEmpty[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}
