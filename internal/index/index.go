// Package index names the field indexes the controllers keep over the
// cache and builds their keys, so the key a value is indexed under and the
// key a lookup asks for are written once: an event on a Node, a Lease, a
// Device or a namespace then enqueues only the objects it concerns.
package index

import (
	"context"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Index names.
const (
	// DeviceNodeNameField indexes Devices by spec.nodeName.
	DeviceNodeNameField = "spec.nodeName"
	// DeviceAssigneeField indexes Devices by spec.assignee.
	DeviceAssigneeField = "spec.assignee"
	// OnboardingGroupField indexes OnboardingRequests by each of spec.groups.
	OnboardingGroupField = "spec.groups"
	// OnboardingProviderField indexes OnboardingRequests by the
	// AccountProviders they name, were given as defaults or have accounts
	// in, and by KeyDefaultProvider while they name none and their
	// defaults are not fixed yet.
	OnboardingProviderField = "accountProviders"
	// OnboardingWaitingField indexes OnboardingRequests whose
	// DevicesAssigned is False under KeyWaiting: a Device event retries
	// them.
	OnboardingWaitingField = "waitingForDevices"
	// PolicySubjectField indexes AccessPolicies by what can select a
	// device: UserKey, GroupKey, and KeyDeviceSelector.
	PolicySubjectField = "subjects"
	// PolicyNamespaceField indexes AccessPolicies by the namespaces they
	// name (NamespaceKey, in destinations and kubernetesAccess),
	// KeyNamespaceSelector and KeyAllNamespaces.
	PolicyNamespaceField = "namespaces"
)

// Fixed keys.
const (
	// KeyDeviceSelector: the policy has a deviceSelector (PolicySubjectField).
	KeyDeviceSelector = "deviceSelector"
	// KeyDefaultProvider: the request names no provider and its defaults
	// are not fixed yet (OnboardingProviderField).
	KeyDefaultProvider = "*default"
	// KeyNamespaceSelector: the policy has a destination namespaceSelector
	// (PolicyNamespaceField).
	KeyNamespaceSelector = "namespaceSelector"
	// KeyAllNamespaces: the policy has a kubernetesAccess entry without
	// namespaces, so its RoleBindings follow every namespace
	// (PolicyNamespaceField).
	KeyAllNamespaces = "allNamespaces"
	// KeyWaiting: the request waits for devices (OnboardingWaitingField).
	KeyWaiting = "true"
)

// UserKey is the PolicySubjectField key of a user a policy names.
func UserKey(user string) string { return "user:" + user }

// GroupKey is the PolicySubjectField key of a group a policy names.
func GroupKey(group string) string { return "group:" + group }

// NamespaceKey is the PolicyNamespaceField key of a namespace a policy names.
func NamespaceKey(ns string) string { return "ns:" + ns }

// Lookups: the list options that select by one key.

// DevicesOnNode selects the Devices whose spec.nodeName is node.
func DevicesOnNode(node string) client.MatchingFields {
	return client.MatchingFields{DeviceNodeNameField: node}
}

// DevicesOf selects the Devices assigned to user.
func DevicesOf(user string) client.MatchingFields {
	return client.MatchingFields{DeviceAssigneeField: user}
}

// RequestsInGroup selects the OnboardingRequests that list group.
func RequestsInGroup(group string) client.MatchingFields {
	return client.MatchingFields{OnboardingGroupField: group}
}

// RequestsOfProvider selects the OnboardingRequests under key (a provider
// name or KeyDefaultProvider).
func RequestsOfProvider(key string) client.MatchingFields {
	return client.MatchingFields{OnboardingProviderField: key}
}

// RequestsWaitingForDevices selects the OnboardingRequests waiting for a
// device.
func RequestsWaitingForDevices() client.MatchingFields {
	return client.MatchingFields{OnboardingWaitingField: KeyWaiting}
}

// PoliciesBySubject selects the AccessPolicies under a PolicySubjectField key.
func PoliciesBySubject(key string) client.MatchingFields {
	return client.MatchingFields{PolicySubjectField: key}
}

// PoliciesByNamespace selects the AccessPolicies under a
// PolicyNamespaceField key.
func PoliciesByNamespace(key string) client.MatchingFields {
	return client.MatchingFields{PolicyNamespaceField: key}
}

// Keys: what each object is indexed under.

// DeviceNodeNameKeys are a Device's DeviceNodeNameField keys.
func DeviceNodeNameKeys(d *itmv1.Device) []string {
	if d.Spec.NodeName != "" {
		return []string{d.Spec.NodeName}
	}
	return nil
}

// DeviceAssigneeKeys are a Device's DeviceAssigneeField keys.
func DeviceAssigneeKeys(d *itmv1.Device) []string {
	if d.Spec.Assignee != "" {
		return []string{d.Spec.Assignee}
	}
	return nil
}

// OnboardingProviderKeys are a request's OnboardingProviderField keys.
func OnboardingProviderKeys(r *itmv1.OnboardingRequest) []string {
	keys := slices.Clone(r.Spec.AccountProviders)
	switch {
	case len(keys) > 0:
	case r.Status.DefaultProviders != nil:
		keys = append(keys, r.Status.DefaultProviders.Names...)
	default:
		keys = append(keys, KeyDefaultProvider)
	}
	for _, a := range r.Status.Accounts {
		keys = append(keys, a.Provider)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// OnboardingWaitingKeys are a request's OnboardingWaitingField keys.
func OnboardingWaitingKeys(r *itmv1.OnboardingRequest) []string {
	if meta.IsStatusConditionFalse(r.Status.Conditions, itmv1.OnboardingConditionDevicesAssigned) {
		return []string{KeyWaiting}
	}
	return nil
}

// PolicySubjectKeys are the PolicySubjectField keys of a policy's subjects.
func PolicySubjectKeys(s itmv1.Subjects) []string {
	keys := make([]string, 0, len(s.Users)+len(s.Groups)+1)
	for _, u := range s.Users {
		keys = append(keys, UserKey(u))
	}
	for _, g := range s.Groups {
		keys = append(keys, GroupKey(g))
	}
	if s.DeviceSelector != nil {
		keys = append(keys, KeyDeviceSelector)
	}
	return keys
}

// PolicyNamespaceKeys are a policy's PolicyNamespaceField keys.
func PolicyNamespaceKeys(s *itmv1.AccessPolicySpec) []string {
	var keys []string
	for _, d := range s.Destinations {
		if d.NamespaceSelector != nil {
			keys = append(keys, KeyNamespaceSelector)
		}
		for _, ns := range d.Namespaces {
			keys = append(keys, NamespaceKey(ns))
		}
	}
	for _, ka := range s.KubernetesAccess {
		if len(ka.Namespaces) == 0 {
			keys = append(keys, KeyAllNamespaces)
		}
		for _, ns := range ka.Namespaces {
			keys = append(keys, NamespaceKey(ns))
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// NamespaceEventKeys are the PolicyNamespaceField keys of the policies an
// event on namespace ns concerns: those naming it, those selecting
// namespaces, and those following every namespace.
func NamespaceEventKeys(ns string) []string {
	return []string{NamespaceKey(ns), KeyNamespaceSelector, KeyAllNamespaces}
}

// Setup registers every index with indexer.
func Setup(ctx context.Context, indexer client.FieldIndexer) error {
	for _, ix := range []struct {
		obj   client.Object
		field string
		keys  client.IndexerFunc
	}{
		{&itmv1.Device{}, DeviceNodeNameField, func(o client.Object) []string { return DeviceNodeNameKeys(o.(*itmv1.Device)) }},
		{&itmv1.Device{}, DeviceAssigneeField, func(o client.Object) []string { return DeviceAssigneeKeys(o.(*itmv1.Device)) }},
		{&itmv1.OnboardingRequest{}, OnboardingGroupField, func(o client.Object) []string { return o.(*itmv1.OnboardingRequest).Spec.Groups }},
		{&itmv1.OnboardingRequest{}, OnboardingProviderField, func(o client.Object) []string { return OnboardingProviderKeys(o.(*itmv1.OnboardingRequest)) }},
		{&itmv1.OnboardingRequest{}, OnboardingWaitingField, func(o client.Object) []string { return OnboardingWaitingKeys(o.(*itmv1.OnboardingRequest)) }},
		{&itmv1.AccessPolicy{}, PolicySubjectField, func(o client.Object) []string { return PolicySubjectKeys(o.(*itmv1.AccessPolicy).Spec.Subjects) }},
		{&itmv1.AccessPolicy{}, PolicyNamespaceField, func(o client.Object) []string { return PolicyNamespaceKeys(&o.(*itmv1.AccessPolicy).Spec) }},
	} {
		if err := indexer.IndexField(ctx, ix.obj, ix.field, ix.keys); err != nil {
			return err
		}
	}
	return nil
}
