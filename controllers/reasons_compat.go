package controllers

import itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"

// Reasons the MaintenanceWindow controller still names unqualified. They
// moved to api/v1alpha1 (accesspolicy_types.go, common_types.go); delete
// these once it uses itmv1's.
const (
	ReasonApplyFailed = itmv1.ReasonApplyFailed
	ReasonInvalidSpec = itmv1.ReasonInvalidSpec
)
