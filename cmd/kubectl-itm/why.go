package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/device"
)

// Verdicts of kubectl itm why.
const (
	verdictAllowed     = "Allowed"
	verdictDenied      = "Denied"
	verdictNotSelected = "NotSelected"
)

// WhyReport is what `kubectl itm why -o json|yaml` prints: an
// AccessPolicy's verdict on one Device, requirement by requirement.
type WhyReport struct {
	// Device and Policy are the names asked about; Mode is the policy's.
	Device string `json:"device"`
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	// At is when the verdict was computed (check-in ages depend on it).
	At time.Time `json:"at"`
	// Verdict is Allowed, Denied or NotSelected (the policy's subjects do
	// not include the device).
	Verdict string `json:"verdict"`
	// Checks are the requirements in order: "subjects" first, then each
	// posture requirement, then "addresses" when the posture passes.
	Checks []Check `json:"checks"`
	// Addresses are the addresses the policy allows for the device (empty
	// unless Verdict is Allowed).
	Addresses []string `json:"addresses"`
}

// Check is one requirement and whether the device passes it.
type Check struct {
	Requirement string `json:"requirement"`
	Passed      bool   `json:"passed"`
	Detail      string `json:"detail"`
}

// whyReport explains an AccessPolicy's verdict on one Device with the
// operator's own logic (internal/access and internal/posture), from live
// objects.
func whyReport(ctx context.Context, c client.Client, devicesNS, deviceName, policyName string, now time.Time) (*WhyReport, error) {
	dev := &itmv1.Device{}
	if err := c.Get(ctx, types.NamespacedName{Name: deviceName}, dev); err != nil {
		return nil, fmt.Errorf("get Device %s: %w", deviceName, err)
	}
	p := &itmv1.AccessPolicy{}
	if err := c.Get(ctx, types.NamespacedName{Name: policyName}, p); err != nil {
		return nil, fmt.Errorf("get AccessPolicy %s: %w", policyName, err)
	}
	requests := map[string]*itmv1.OnboardingRequest{}
	if a := dev.Spec.Assignee; a != "" {
		r := &itmv1.OnboardingRequest{}
		switch err := c.Get(ctx, types.NamespacedName{Name: a}, r); {
		case err == nil:
			requests[a] = r
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("get OnboardingRequest %s: %w", a, err)
		}
	}
	sel, err := access.Selector(p.Spec.Subjects)
	if err != nil {
		return nil, err
	}
	people := access.People(p.Spec.Subjects, requests)

	cand := access.Candidate{Device: dev}
	var checkInNote string
	if cand.LastCheckIn, checkInNote, err = lastCheckIn(ctx, c, devicesNS, dev); err != nil {
		return nil, err
	}
	others := &itmv1.DeviceList{}
	if err := c.List(ctx, others); err != nil {
		return nil, fmt.Errorf("list Devices: %w", err)
	}
	mine := device.Claims(dev)
	for _, o := range others.Items {
		if o.Name == dev.Name {
			continue
		}
		for _, addr := range device.Claims(&o) {
			if slices.Contains(mine, addr) {
				if cand.Conflicts == nil {
					cand.Conflicts = map[string][]string{}
				}
				cand.Conflicts[addr] = append(cand.Conflicts[addr], o.Name)
			}
		}
	}

	rep := &WhyReport{Device: dev.Name, Policy: p.Name, Mode: string(p.Spec.Mode), At: now.UTC(), Addresses: []string{}}
	selected, how := selection(dev, p, people, sel, requests)
	rep.Checks = append(rep.Checks, Check{Requirement: "subjects", Passed: selected, Detail: how})
	v := access.Evaluate(cand, p.Spec.Posture, now)
	for _, ch := range v.Posture.Checks {
		detail := ch.Detail
		if ch.Requirement == "maxCheckInAge" && checkInNote != "" {
			detail += " " + checkInNote
		}
		rep.Checks = append(rep.Checks, Check{Requirement: ch.Requirement, Passed: ch.Passed, Detail: detail})
	}
	if v.Posture.Allowed() {
		if v.Allowed {
			for _, a := range v.Addresses {
				rep.Addresses = append(rep.Addresses, a.String())
			}
			rep.Checks = append(rep.Checks, Check{Requirement: "addresses", Passed: true, Detail: strings.Join(rep.Addresses, ", ")})
		} else {
			rep.Checks = append(rep.Checks, Check{Requirement: "addresses", Passed: false, Detail: strings.Join(v.Reasons, "; ")})
		}
	}
	switch {
	case !selected:
		rep.Verdict = verdictNotSelected
		rep.Addresses = []string{}
	case v.Allowed:
		rep.Verdict = verdictAllowed
	default:
		rep.Verdict = verdictDenied
		rep.Addresses = []string{}
	}
	return rep, nil
}

// why prints whyReport as a table.
func why(ctx context.Context, c client.Client, devicesNS, deviceName, policyName string, now time.Time, out io.Writer) error {
	rep, err := whyReport(ctx, c, devicesNS, deviceName, policyName, now)
	if err != nil {
		return err
	}
	return printWhy(rep, out)
}

func printWhy(rep *WhyReport, out io.Writer) error {
	fmt.Fprintf(out, "Device %s under AccessPolicy %s (mode %s), at %s\n\n", rep.Device, rep.Policy, rep.Mode, rep.At.Format(time.RFC3339))
	tw := newDescribe(out)
	for _, ch := range rep.Checks {
		row(tw, ch.Passed, ch.Requirement, ch.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch rep.Verdict {
	case verdictNotSelected:
		fmt.Fprintln(out, "\nVerdict: NOT SELECTED: the policy's subjects do not include this device.")
	case verdictAllowed:
		fmt.Fprintln(out, "\nVerdict: ALLOWED")
	default:
		fmt.Fprintln(out, "\nVerdict: DENIED")
	}
	return nil
}

func row(w io.Writer, ok bool, requirement, detail string) {
	mark := "FAIL"
	if ok {
		mark = "PASS"
	}
	fmt.Fprintf(w, "  %s\t%s\t%s\n", mark, requirement, detail)
}

// selection says whether and how the policy's subjects pick the device.
func selection(dev *itmv1.Device, p *itmv1.AccessPolicy, people map[string]bool, sel labels.Selector, requests map[string]*itmv1.OnboardingRequest) (bool, string) {
	var via []string
	a := dev.Spec.Assignee
	if a != "" && people[a] {
		if slices.Contains(p.Spec.Subjects.Users, a) {
			via = append(via, fmt.Sprintf("assigned to %s, a listed user", a))
		}
		if r := requests[a]; r != nil {
			for _, g := range r.Spec.Groups {
				if slices.Contains(p.Spec.Subjects.Groups, g) {
					via = append(via, fmt.Sprintf("assigned to %s, a member of group %s", a, g))
				}
			}
		}
	}
	if sel != nil && sel.Matches(labels.Set(dev.Labels)) {
		via = append(via, "matches deviceSelector "+sel.String())
	}
	if len(via) > 0 {
		return true, strings.Join(via, "; ")
	}
	r := requests[a]
	switch {
	case a == "":
		return false, "not assigned to anyone, and no deviceSelector matches its labels"
	case r != nil && !access.InForce(r):
		return false, fmt.Sprintf("assigned to %s, whose OnboardingRequest is %s, not Active", a, cmp.Or(string(r.Status.Phase), "without a phase"))
	default:
		return false, fmt.Sprintf("assigned to %s, who is not among the policy's users or groups", a)
	}
}

// lastCheckIn is the device's last check-in from its Lease, or, when the
// caller may not read Leases, from status.lastCheckIn (with a note saying
// so).
func lastCheckIn(ctx context.Context, c client.Client, devicesNS string, dev *itmv1.Device) (*time.Time, string, error) {
	key, ok := device.LeaseKey(devicesNS, dev)
	if !ok {
		return nil, "", nil
	}
	lease := &coordinationv1.Lease{}
	switch err := c.Get(ctx, key, lease); {
	case err == nil:
		if lease.Spec.RenewTime != nil {
			return &lease.Spec.RenewTime.Time, "", nil
		}
	case apierrors.IsForbidden(err) && dev.Status.LastCheckIn != nil:
		// Without access to the Lease, status.lastCheckIn is the best view
		// (it may lag the Lease by a few minutes).
		return &dev.Status.LastCheckIn.Time, fmt.Sprintf("(from status.lastCheckIn: no access to Lease %s)", key), nil
	case !apierrors.IsNotFound(err):
		return nil, "", fmt.Errorf("get Lease %s: %w", key, err)
	}
	return nil, "", nil
}
