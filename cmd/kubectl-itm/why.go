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

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/device"
)

// why explains an AccessPolicy's verdict on one Device with the operator's
// own logic (internal/access and internal/posture), from live objects.
func why(ctx context.Context, c client.Client, devicesNS, deviceName, policyName string, now time.Time, out io.Writer) error {
	dev := &itmv1.Device{}
	if err := c.Get(ctx, types.NamespacedName{Name: deviceName}, dev); err != nil {
		return fmt.Errorf("get Device %s: %w", deviceName, err)
	}
	p := &itmv1.AccessPolicy{}
	if err := c.Get(ctx, types.NamespacedName{Name: policyName}, p); err != nil {
		return fmt.Errorf("get AccessPolicy %s: %w", policyName, err)
	}
	requests := map[string]*itmv1.OnboardingRequest{}
	if a := dev.Spec.Assignee; a != "" {
		r := &itmv1.OnboardingRequest{}
		switch err := c.Get(ctx, types.NamespacedName{Name: a}, r); {
		case err == nil:
			requests[a] = r
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("get OnboardingRequest %s: %w", a, err)
		}
	}
	sel, err := access.Selector(p.Spec.Subjects)
	if err != nil {
		return err
	}
	people := access.People(p.Spec.Subjects, requests)

	cand := access.Candidate{Device: dev}
	var checkInNote string
	if cand.LastCheckIn, checkInNote, err = lastCheckIn(ctx, c, devicesNS, dev); err != nil {
		return err
	}
	others := &itmv1.DeviceList{}
	if err := c.List(ctx, others); err != nil {
		return fmt.Errorf("list Devices: %w", err)
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

	fmt.Fprintf(out, "Device %s under AccessPolicy %s (mode %s), at %s\n\n", dev.Name, p.Name, p.Spec.Mode, now.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	selected, how := selection(dev, p, people, sel, requests)
	row(tw, selected, "subjects", how)
	v := access.Evaluate(cand, p.Spec.Posture, now)
	for _, ch := range v.Posture.Checks {
		detail := ch.Detail
		if ch.Requirement == "maxCheckInAge" && checkInNote != "" {
			detail += " " + checkInNote
		}
		row(tw, ch.Passed, ch.Requirement, detail)
	}
	if v.Posture.Allowed() {
		if v.Allowed {
			addrs := make([]string, 0, len(v.Addresses))
			for _, a := range v.Addresses {
				addrs = append(addrs, a.String())
			}
			row(tw, true, "addresses", strings.Join(addrs, ", "))
		} else {
			row(tw, false, "addresses", strings.Join(v.Reasons, "; "))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case !selected:
		fmt.Fprintln(out, "\nVerdict: NOT SELECTED: the policy's subjects do not include this device.")
	case v.Allowed:
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
