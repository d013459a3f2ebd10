// Package v1alpha1 contains the itmanager.io/v1alpha1 API: Device,
// AccessPolicy, OnboardingRequest, AccountProvider and MaintenanceWindow.
// All kinds are cluster-scoped and belong to the category "itmanager".
//
// +kubebuilder:object:generate=true
// +groupName=itmanager.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "itmanager.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this API with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Device{}, &DeviceList{},
		&AccessPolicy{}, &AccessPolicyList{},
		&OnboardingRequest{}, &OnboardingRequestList{},
		&AccountProvider{}, &AccountProviderList{},
		&MaintenanceWindow{}, &MaintenanceWindowList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
