// Package v1alpha1 contains the itmanager.io/v1alpha1 API: Device,
// AccessPolicy, OnboardingRequest, AccountProvider and MaintenanceWindow.
// All kinds are cluster-scoped and belong to the category "itmanager".
//
// +kubebuilder:object:generate=true
// +groupName=itmanager.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "itmanager.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this API with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
