// Package controllers holds the reconcilers: thin I/O glue around the pure
// packages under internal/.
package controllers

import (
	"context"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
)

// Field indexes over Devices, so an event on a Node, a Lease or another
// Device enqueues only the Devices it concerns.
const (
	// IndexDeviceNodeName indexes Devices by spec.nodeName.
	IndexDeviceNodeName = "spec.nodeName"
	// IndexDeviceAddress indexes Active Devices by every address they claim
	// (static and observed).
	IndexDeviceAddress = "address"
	// IndexDeviceAssignee indexes Devices by spec.assignee.
	IndexDeviceAssignee = "spec.assignee"
	// IndexOnboardingGroup indexes OnboardingRequests by each of spec.groups.
	IndexOnboardingGroup = "spec.groups"
	// IndexOnboardingProvider indexes OnboardingRequests by the
	// AccountProviders they name, were given as defaults or have accounts
	// in, and by ProviderKeyDefault while they name none and their
	// defaults are not fixed yet.
	IndexOnboardingProvider = "accountProviders"
	// IndexOnboardingWaiting indexes OnboardingRequests whose
	// DevicesAssigned is False under "true": a Device event retries them.
	IndexOnboardingWaiting = "waitingForDevices"
	// IndexPolicySubject indexes AccessPolicies by what can select a device:
	// "user:<name>", "group:<name>", and PolicyKeyDeviceSelector.
	IndexPolicySubject = "subjects"
	// IndexPolicyNamespace indexes AccessPolicies by the namespaces they
	// name ("ns:<name>", in destinations and kubernetesAccess) and
	// PolicyKeyNamespaceSelector.
	IndexPolicyNamespace = "namespaces"

	PolicyKeyDeviceSelector    = "deviceSelector"
	ProviderKeyDefault         = "*default"
	PolicyKeyNamespaceSelector = "namespaceSelector"
	// PolicyKeyAllNamespaces indexes AccessPolicies with a kubernetesAccess
	// entry without namespaces: its RoleBindings follow every namespace.
	PolicyKeyAllNamespaces = "allNamespaces"
)

// SetupIndexes registers the field indexes the controllers use.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &itmv1.Device{}, IndexDeviceNodeName, func(o client.Object) []string {
		if n := o.(*itmv1.Device).Spec.NodeName; n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.Device{}, IndexDeviceAddress, func(o client.Object) []string {
		return DeviceAddresses(o.(*itmv1.Device))
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.Device{}, IndexDeviceAssignee, func(o client.Object) []string {
		if a := o.(*itmv1.Device).Spec.Assignee; a != "" {
			return []string{a}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.OnboardingRequest{}, IndexOnboardingGroup, func(o client.Object) []string {
		return o.(*itmv1.OnboardingRequest).Spec.Groups
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.OnboardingRequest{}, IndexOnboardingProvider, func(o client.Object) []string {
		return onboardingProviderKeys(o.(*itmv1.OnboardingRequest))
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.OnboardingRequest{}, IndexOnboardingWaiting, func(o client.Object) []string {
		if meta.IsStatusConditionFalse(o.(*itmv1.OnboardingRequest).Status.Conditions, itmv1.OnboardingConditionDevicesAssigned) {
			return []string{"true"}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &itmv1.AccessPolicy{}, IndexPolicySubject, func(o client.Object) []string {
		return PolicySubjectKeys(o.(*itmv1.AccessPolicy).Spec.Subjects)
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &itmv1.AccessPolicy{}, IndexPolicyNamespace, func(o client.Object) []string {
		return policyNamespaceKeys(&o.(*itmv1.AccessPolicy).Spec)
	})
}

// onboardingProviderKeys are the IndexOnboardingProvider keys of a request.
func onboardingProviderKeys(r *itmv1.OnboardingRequest) []string {
	keys := slices.Clone(r.Spec.AccountProviders)
	switch {
	case len(keys) > 0:
	case r.Status.DefaultProviders != nil:
		keys = append(keys, r.Status.DefaultProviders.Names...)
	default:
		keys = append(keys, ProviderKeyDefault)
	}
	for _, a := range r.Status.Accounts {
		keys = append(keys, a.Provider)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// PolicySubjectKeys are the IndexPolicySubject keys of a policy's subjects.
func PolicySubjectKeys(s itmv1.Subjects) []string {
	keys := make([]string, 0, len(s.Users)+len(s.Groups)+1)
	for _, u := range s.Users {
		keys = append(keys, "user:"+u)
	}
	for _, g := range s.Groups {
		keys = append(keys, "group:"+g)
	}
	if s.DeviceSelector != nil {
		keys = append(keys, PolicyKeyDeviceSelector)
	}
	return keys
}

func policyNamespaceKeys(s *itmv1.AccessPolicySpec) []string {
	var keys []string
	for _, d := range s.Destinations {
		if d.NamespaceSelector != nil {
			keys = append(keys, PolicyKeyNamespaceSelector)
		}
		for _, ns := range d.Namespaces {
			keys = append(keys, "ns:"+ns)
		}
	}
	for _, ka := range s.KubernetesAccess {
		if len(ka.Namespaces) == 0 {
			keys = append(keys, PolicyKeyAllNamespaces)
		}
		for _, ns := range ka.Namespaces {
			keys = append(keys, "ns:"+ns)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// DeviceAddresses are the addresses an Active Device claims: its static ones
// and those it reported, each in its canonical spelling (device.Canonical,
// so "FD00:0::1" and "fd00::1" are one claim), deduplicated and sorted.
// Retired and Lost devices claim none (they never get access).
func DeviceAddresses(d *itmv1.Device) []string {
	if d.Spec.Lifecycle == itmv1.DeviceLifecycleRetired || d.Spec.Lifecycle == itmv1.DeviceLifecycleLost {
		return nil
	}
	var out []string
	for _, a := range d.Spec.Addresses {
		out = append(out, device.Canonical(a))
	}
	if d.Status.Observed != nil {
		for _, a := range d.Status.Observed.Addresses {
			out = append(out, device.Canonical(a))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
