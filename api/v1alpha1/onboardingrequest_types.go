package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EmploymentType is how a person is employed.
// +kubebuilder:validation:Enum=Employee;Contractor;Intern
type EmploymentType string

// Employment types.
const (
	EmploymentTypeEmployee   EmploymentType = "Employee"
	EmploymentTypeContractor EmploymentType = "Contractor"
	EmploymentTypeIntern     EmploymentType = "Intern"
)

// OnboardingPhase is where an OnboardingRequest stands.
// +kubebuilder:validation:Enum=Pending;AwaitingApproval;Scheduled;Provisioning;Active;Offboarding;Offboarded;Failed
type OnboardingPhase string

// Onboarding phases.
const (
	OnboardingPhasePending          OnboardingPhase = "Pending"
	OnboardingPhaseAwaitingApproval OnboardingPhase = "AwaitingApproval"
	OnboardingPhaseScheduled        OnboardingPhase = "Scheduled"
	OnboardingPhaseProvisioning     OnboardingPhase = "Provisioning"
	OnboardingPhaseActive           OnboardingPhase = "Active"
	OnboardingPhaseOffboarding      OnboardingPhase = "Offboarding"
	OnboardingPhaseOffboarded       OnboardingPhase = "Offboarded"
	OnboardingPhaseFailed           OnboardingPhase = "Failed"
)

// AccountState is the state of one provisioned account.
// +kubebuilder:validation:Enum=Provisioned;Disabled;Deleted;Failed
type AccountState string

// Account states.
const (
	AccountStateProvisioned AccountState = "Provisioned"
	AccountStateDisabled    AccountState = "Disabled"
	AccountStateDeleted     AccountState = "Deleted"
	AccountStateFailed      AccountState = "Failed"
)

// OnboardingRequest condition types (besides Ready).
const (
	// OnboardingConditionApproved is set by an approver, never by the
	// requester or the controller, and never removed or flipped.
	OnboardingConditionApproved = "Approved"
	// OnboardingConditionDenied is set by an approver; a denied request
	// provisions nothing.
	OnboardingConditionDenied = "Denied"
	// OnboardingConditionAccountsReady is True when every account is in its
	// desired state.
	OnboardingConditionAccountsReady = "AccountsReady"
	// OnboardingConditionDevicesAssigned is True when every device request
	// is satisfied.
	OnboardingConditionDevicesAssigned = "DevicesAssigned"
)

// OnboardingRequest condition reasons. A Ready reason that names a phase in
// progress (Pending, Provisioning, Offboarding) is the phase itself.
const (
	// AccountsReady reasons.

	// OnboardingReasonProvisioningFailed: a provider failed or refused.
	OnboardingReasonProvisioningFailed = "ProvisioningFailed"
	// OnboardingReasonOffboardingBlocked: an account could not be undone.
	OnboardingReasonOffboardingBlocked = "OffboardingBlocked"
	// OnboardingReasonProviderNotFound: a named AccountProvider does not
	// exist (and nothing else failed).
	OnboardingReasonProviderNotFound = "ProviderNotFound"
	// OnboardingReasonForceOffboarded: offboarding finished by
	// itmanager.io/force-offboard, skipping what it names.
	OnboardingReasonForceOffboarded = "ForceOffboarded"
	// OnboardingReasonCreatedDisabled: accounts exist, disabled until
	// spec.startDate.
	OnboardingReasonCreatedDisabled = "CreatedDisabled"
	// OnboardingReasonProvisioned: every account is provisioned.
	OnboardingReasonProvisioned = "Provisioned"

	// DevicesAssigned reasons.

	// OnboardingReasonDeviceUnavailable: a device request has no device.
	OnboardingReasonDeviceUnavailable = "DeviceUnavailable"
	// OnboardingReasonReleaseBlocked: another field manager holds a
	// device's spec.assignee.
	OnboardingReasonReleaseBlocked = "ReleaseBlocked"
	// OnboardingReasonReleasing: devices are still assigned while leaving.
	OnboardingReasonReleasing = "Releasing"
	// OnboardingReasonReleased: no device is assigned any more.
	OnboardingReasonReleased = "Released"
	// OnboardingReasonAssigned: every device request is satisfied.
	OnboardingReasonAssigned = "Assigned"

	// Reasons of AccountsReady, DevicesAssigned and Ready.

	// OnboardingReasonAwaitingApproval: nothing is done before approval.
	OnboardingReasonAwaitingApproval = "AwaitingApproval"
	// OnboardingReasonDenied: an approver denied the request.
	OnboardingReasonDenied = "Denied"
	// OnboardingReasonOffboarded: everything is undone.
	OnboardingReasonOffboarded = "Offboarded"

	// Ready reasons.

	// OnboardingReasonActive: accounts provisioned, devices assigned.
	OnboardingReasonActive = "Active"
	// OnboardingReasonDegraded: Active, with a problem status names (the
	// person keeps the access they have).
	OnboardingReasonDegraded = "Degraded"
	// OnboardingReasonScheduled: before spec.startDate.
	OnboardingReasonScheduled = "Scheduled"
	// OnboardingReasonFailed: a permanent problem that waits for a person.
	OnboardingReasonFailed = "Failed"

	// Stalled reason.

	// OnboardingReasonNeedsAttention: nothing moves until a person acts.
	OnboardingReasonNeedsAttention = "NeedsAttention"
)

// Person describes the person joining.
type Person struct {
	// displayName is the person's full name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	DisplayName string `json:"displayName"`

	// email is the person's work email address.
	// +required
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:Pattern=`^[^@\s]+@[^@\s]+\.[^@\s]+$`
	Email string `json:"email"`

	// department the person works in.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Department string `json:"department,omitempty"`

	// title is the person's job title.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Title string `json:"title,omitempty"`

	// manager is the username of the person's manager.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Manager string `json:"manager,omitempty"`

	// employmentType is Employee, Contractor or Intern.
	// +optional
	EmploymentType EmploymentType `json:"employmentType,omitempty"`
}

// DeviceRequest asks for one device: either a specific one by name, or any
// available device of a class matching a selector.
// +kubebuilder:validation:XValidation:rule="has(self.name) != has(self.class)",message="each device request must set exactly one of name or class"
// +kubebuilder:validation:XValidation:rule="!has(self.selector) || has(self.class)",message="selector may only be set together with class",fieldPath=".selector"
type DeviceRequest struct {
	// name of a specific Device.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// class of device wanted, when any available device will do.
	// +optional
	Class DeviceClass `json:"class,omitempty"`

	// selector narrows the devices of class by label.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// OnboardingRequestSpec describes one person joining (and later leaving).
// +kubebuilder:validation:XValidation:rule="!has(self.startDate) || !has(self.endDate) || timestamp(self.endDate) > timestamp(self.startDate)",message="spec.endDate must be after spec.startDate",fieldPath=".endDate"
// +kubebuilder:validation:XValidation:rule="!(has(oldSelf.offboard) && oldSelf.offboard) || (has(self.offboard) && self.offboard)",message="spec.offboard cannot be unset: offboarding is final, and a returning person gets a new OnboardingRequest",fieldPath=".offboard"
type OnboardingRequestSpec struct {
	// person is who is joining.
	// +required
	Person Person `json:"person"`

	// groups the person belongs to; AccessPolicies grant access by group.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$`
	Groups []string `json:"groups,omitempty"`

	// startDate is when accounts are enabled; before it they exist disabled.
	// +optional
	StartDate *metav1.Time `json:"startDate,omitempty"`

	// endDate is when the person is offboarded automatically.
	// +optional
	EndDate *metav1.Time `json:"endDate,omitempty"`

	// accountProviders are the names of the AccountProviders to provision in;
	// empty means every provider marked default.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	AccountProviders []string `json:"accountProviders,omitempty"`

	// devices to assign to the person.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Devices []DeviceRequest `json:"devices,omitempty"`

	// approvalRequired holds provisioning until an approver sets the Approved
	// condition. Setting it to false requires the approve verb.
	// +optional
	// +kubebuilder:default=true
	ApprovalRequired *bool `json:"approvalRequired,omitempty"`

	// offboard, when true, offboards the person now and keeps the record.
	// +optional
	Offboard bool `json:"offboard,omitempty"`
}

// AccountStatus records one account in one provider.
type AccountStatus struct {
	// provider is the AccountProvider name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Provider string `json:"provider"`

	// id identifies the account in the provider (a ServiceAccount name, an
	// LDAP DN).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	ID string `json:"id,omitempty"`

	// state of the account.
	// +required
	State AccountState `json:"state"`

	// message explains the state, for example a conflict.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// DefaultProviders is the set of default AccountProviders a request was
// approved with.
type DefaultProviders struct {
	// names of the AccountProviders marked default at that instant, sorted;
	// empty when there were none.
	// +required
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	Names []string `json:"names"`

	// fixedAt is when the set was fixed.
	// +required
	FixedAt metav1.Time `json:"fixedAt"`
}

// OnboardingRequestStatus is what was provisioned for the person.
type OnboardingRequestStatus struct {
	// observedGeneration is the generation the status reflects.
	ObservedGeneration int64 `json:"observedGeneration"`

	// phase is where the request stands.
	// +optional
	Phase OnboardingPhase `json:"phase,omitempty"`

	// accounts records every account provisioned, so nothing is lost if the
	// operator stops at any point.
	// +optional
	// +listType=map
	// +listMapKey=provider
	// +kubebuilder:validation:MaxItems=16
	Accounts []AccountStatus `json:"accounts,omitempty"`

	// devices are the names of the devices assigned.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	Devices []string `json:"devices,omitempty"`

	// credentialsSecret references the Secret holding the person's
	// credentials; secret material is never copied into status.
	// +optional
	CredentialsSecret *ObjectReference `json:"credentialsSecret,omitempty"`

	// defaultProviders records the AccountProviders marked default when the
	// request was approved (or, when approval is not required, first
	// provisioned); a request that names no provider uses exactly these, so
	// a provider made default later applies only to requests approved
	// after that. Unset until then, and only for requests that name no
	// provider. Written by itmanager alone.
	// +optional
	DefaultProviders *DefaultProviders `json:"defaultProviders,omitempty"`

	// conditions: Approved, Denied, AccountsReady, DevicesAssigned, Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// OnboardingRequest is one person joining and later leaving. The object name
// is the username. An offboarded request stays as the record.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=onb,categories=itmanager
// +kubebuilder:printcolumn:name="Person",type=string,JSONPath=`.spec.person.displayName`
// +kubebuilder:printcolumn:name="Start",type=string,JSONPath=`.spec.startDate`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Approved",type=string,JSONPath=`.status.conditions[?(@.type=="Approved")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="metadata.name is the username: at most 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
type OnboardingRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the person and what they need.
	// +required
	Spec OnboardingRequestSpec `json:"spec"`

	// status is what was provisioned.
	// +optional
	// A status nobody wrote yet reads as observedGeneration 0, below
	// generation 1, so kstatus (Flux, kubectl wait) sees InProgress, never
	// Current, before the first reconcile.
	// +kubebuilder:default={observedGeneration:0}
	Status OnboardingRequestStatus `json:"status,omitempty"`
}

// OnboardingRequestList is a list of OnboardingRequests.
// +kubebuilder:object:root=true
type OnboardingRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OnboardingRequest `json:"items"`
}
