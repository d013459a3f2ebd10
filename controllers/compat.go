package controllers

import (
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/index"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// Forwards to where these now live, kept only so the branches of issue 13
// that still use the old names compile when merged. The lead removes this
// file once every caller uses internal/index, internal/device and
// internal/kit directly.

// Index names and keys (internal/index).
const (
	IndexDeviceNodeName        = index.DeviceNodeNameField
	IndexDeviceAddress         = index.DeviceAddressField
	IndexDeviceAssignee        = index.DeviceAssigneeField
	IndexOnboardingGroup       = index.OnboardingGroupField
	IndexOnboardingProvider    = index.OnboardingProviderField
	IndexOnboardingWaiting     = index.OnboardingWaitingField
	IndexPolicySubject         = index.PolicySubjectField
	IndexPolicyNamespace       = index.PolicyNamespaceField
	PolicyKeyDeviceSelector    = index.KeyDeviceSelector
	ProviderKeyDefault         = index.KeyDefaultProvider
	PolicyKeyNamespaceSelector = index.KeyNamespaceSelector
	PolicyKeyAllNamespaces     = index.KeyAllNamespaces
)

// NodeLeaseNamespace is device.NodeLeaseNamespace.
const NodeLeaseNamespace = device.NodeLeaseNamespace

// freshnessPriority is kit.FreshnessPriority.
const freshnessPriority = kit.FreshnessPriority

// PolicySubjectKeys is index.PolicySubjectKeys.
func PolicySubjectKeys(s itmv1.Subjects) []string { return index.PolicySubjectKeys(s) }

// DeviceAddresses is device.Claims.
func DeviceAddresses(d *itmv1.Device) []string { return device.Claims(d) }

// LeaseKey is device.LeaseKey.
func LeaseKey(devicesNamespace string, d *itmv1.Device) (types.NamespacedName, bool) {
	return device.LeaseKey(devicesNamespace, d)
}
