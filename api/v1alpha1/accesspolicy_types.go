package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AccessMode says whether an AccessPolicy writes what it computes.
// +kubebuilder:validation:Enum=Enforce;Audit
type AccessMode string

// Access modes.
const (
	// AccessModeEnforce writes NetworkPolicies and RBAC bindings.
	AccessModeEnforce AccessMode = "Enforce"
	// AccessModeAudit computes and reports, and writes nothing.
	AccessModeAudit AccessMode = "Audit"
)

// Protocol is a network protocol of a destination port.
// +kubebuilder:validation:Enum=TCP;UDP;SCTP
type Protocol string

// Protocols.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// AccessPolicy condition reasons.
const (
	// ReasonNoAllowedDevices means no device qualifies: selected pods stay
	// isolated from device addresses.
	ReasonNoAllowedDevices = "NoAllowedDevices"
	// ReasonRoleNotAllowed means kubernetesAccess names a ClusterRole the
	// installation does not allow the operator to bind.
	ReasonRoleNotAllowed = "RoleNotAllowed"
	// ReasonEnforced means every generated object is as computed.
	ReasonEnforced = "Enforced"
	// ReasonAudited means the policy is in Audit mode: computed and
	// reported, nothing written.
	ReasonAudited = "Audited"
	// ReasonForbiddenDestination means a destination or kubernetesAccess
	// namespace is one of itmanager's own (never a destination).
	ReasonForbiddenDestination = "ForbiddenDestination"
	// ReasonApplyFailed means writing a generated object failed; it is
	// retried.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonNameTaken means an object itmanager did not create holds a
	// generated name; it is reported, never taken over.
	ReasonNameTaken = "NameTaken"
)

// Subjects are who an AccessPolicy is for.
// +kubebuilder:validation:XValidation:rule="(has(self.groups) && size(self.groups) > 0) || (has(self.users) && size(self.users) > 0) || has(self.deviceSelector)",message="spec.subjects must name at least one of groups, users or deviceSelector"
type Subjects struct {
	// groups whose members (people of Active OnboardingRequests) are subjects.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$`
	Groups []string `json:"groups,omitempty"`

	// users are usernames (OnboardingRequest names) that are subjects.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Users []string `json:"users,omitempty"`

	// deviceSelector selects Devices directly, whoever they are assigned to.
	// +optional
	DeviceSelector *metav1.LabelSelector `json:"deviceSelector,omitempty"`
}

// Posture is what a device must meet to be allowed. Unknown facts fail.
type Posture struct {
	// maxCheckInAge is the oldest last check-in that still qualifies, for
	// example "15m".
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.posture.maxCheckInAge must be a positive duration"
	MaxCheckInAge *metav1.Duration `json:"maxCheckInAge,omitempty"`

	// requireUpToDate requires the device's UpToDate condition to be True.
	// +optional
	RequireUpToDate bool `json:"requireUpToDate,omitempty"`

	// requireDiskEncryption requires the device to report an encrypted disk.
	// +optional
	RequireDiskEncryption bool `json:"requireDiskEncryption,omitempty"`

	// minOSVersions maps an OS family to the lowest version allowed, compared
	// as dotted numeric versions. A device of another family fails.
	// +optional
	// +kubebuilder:validation:MaxProperties=6
	// +kubebuilder:validation:XValidation:rule="self.all(k, k in ['Linux', 'Windows', 'macOS', 'iOS', 'Android', 'Other'])",message="spec.posture.minOSVersions keys must be OS families: Linux, Windows, macOS, iOS, Android, Other"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 32 && self[k].matches('^[0-9]+([.][0-9]+)*$'))",message="spec.posture.minOSVersions values must be dotted numeric versions such as 14.2.1"
	MinOSVersions map[OSFamily]string `json:"minOSVersions,omitempty"`

	// requiredAttributes maps an observed attribute to the value it must have.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 63 && size(self[k]) <= 256)",message="spec.posture.requiredAttributes keys are at most 63 and values at most 256 characters"
	RequiredAttributes map[string]string `json:"requiredAttributes,omitempty"`
}

// Port is a destination port or port range.
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort >= self.port",message="endPort must be greater than or equal to port",fieldPath=".endPort"
type Port struct {
	// port is the destination port, or the first port of a range.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// endPort is the last port of a range that starts at port.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	EndPort *int32 `json:"endPort,omitempty"`

	// protocol is TCP (when omitted), UDP or SCTP. It has no schema
	// default: destinations is an atomic list, and a default inside it
	// would make every server-side apply of the same manifest a write (the
	// applied list, without the default, differs from the stored one).
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
}

// Destination is the workloads a policy grants access to.
// +kubebuilder:validation:XValidation:rule="has(self.namespaces) != has(self.namespaceSelector)",message="each destination must set exactly one of namespaces or namespaceSelector"
type Destination struct {
	// namespaces are the destination namespaces by name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`

	// namespaceSelector selects destination namespaces by label.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector selects the pods in those namespaces; empty selects all.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`

	// ports the subjects may reach; empty means all ports.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Ports []Port `json:"ports,omitempty"`
}

// KubernetesAccess binds a ClusterRole to the subjects' Kubernetes identities.
type KubernetesAccess struct {
	// clusterRole is the ClusterRole to bind. The author of the policy must
	// hold "bind" on it, and the installation must allow the operator to bind it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClusterRole string `json:"clusterRole"`

	// namespaces to bind the role in (RoleBindings); empty binds it
	// cluster-wide (ClusterRoleBinding).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`
}

// MaxNamedDestinationNamespaces bounds the namespaces named across all of
// spec.destinations, so the admission gate that checks NetworkPolicy rights
// in each of them (one rule per namespace, hack/admissiongen) stays finite.
const MaxNamedDestinationNamespaces = 16

// AccessPolicySpec is who may reach what, and from which devices.
// +kubebuilder:validation:XValidation:rule="self.destinations.map(d, has(d.namespaces) ? size(d.namespaces) : 0).sum() <= 16",message="spec.destinations: at most 16 namespaces may be named across all destinations; use a namespaceSelector for more",fieldPath=".destinations"
type AccessPolicySpec struct {
	// subjects are the people, groups and devices the policy is for.
	// +required
	Subjects Subjects `json:"subjects"`

	// posture is what a device must meet to be allowed. Unknown facts fail.
	// +optional
	Posture *Posture `json:"posture,omitempty"`

	// destinations are the workloads the subjects may reach.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Destinations []Destination `json:"destinations"`

	// kubernetesAccess binds ClusterRoles to the subjects' Kubernetes identities.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	KubernetesAccess []KubernetesAccess `json:"kubernetesAccess,omitempty"`

	// mode is Enforce (default: write NetworkPolicies and bindings) or Audit
	// (compute and report, write nothing).
	// +optional
	// +kubebuilder:default=Enforce
	Mode AccessMode `json:"mode,omitempty"`
}

// DeviceCounts counts the devices a policy considered.
type DeviceCounts struct {
	// matched is the number of devices the subjects select.
	Matched int32 `json:"matched"`
	// allowed is the number of matched devices that pass every requirement.
	Allowed int32 `json:"allowed"`
	// denied is the number of matched devices that fail a requirement.
	Denied int32 `json:"denied"`
}

// DeniedDevice explains why a device was denied.
type DeniedDevice struct {
	// device is the Device name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Device string `json:"device"`

	// reasons in words that do not go stale, for example
	// "last check-in 2026-11-21T10:00:00Z is older than 15m".
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	Reasons []string `json:"reasons,omitempty"`
}

// AccessPolicyStatus is what the operator computed and wrote.
type AccessPolicyStatus struct {
	// observedGeneration is the generation the status reflects.
	ObservedGeneration int64 `json:"observedGeneration"`

	// devices counts matched, allowed and denied devices.
	Devices DeviceCounts `json:"devices"`

	// denied lists up to 20 denied devices with the reasons.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	Denied []DeniedDevice `json:"denied,omitempty"`

	// networkPolicies is the number of NetworkPolicies generated.
	NetworkPolicies int32 `json:"networkPolicies"`

	// addressBlocks is the number of CIDRs in the generated NetworkPolicies.
	AddressBlocks int32 `json:"addressBlocks"`

	// conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AccessPolicy says which people, groups and devices may reach which
// workloads, and only from compliant devices. It is allow-only and additive,
// like NetworkPolicy.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ap,categories=itmanager
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Matched",type=integer,JSONPath=`.status.devices.matched`
// +kubebuilder:printcolumn:name="Allowed",type=integer,JSONPath=`.status.devices.allowed`
// +kubebuilder:printcolumn:name="Denied",type=integer,JSONPath=`.status.devices.denied`
// +kubebuilder:printcolumn:name="NetPols",type=integer,JSONPath=`.status.networkPolicies`
// +kubebuilder:printcolumn:name="CIDRs",type=integer,JSONPath=`.status.addressBlocks`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 50 characters (lowercase letters, digits and '-')"
type AccessPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is who may reach what.
	// +required
	Spec AccessPolicySpec `json:"spec"`

	// status is what the operator computed and wrote.
	// +optional
	// A status nobody wrote yet reads as observedGeneration 0, below
	// generation 1, so kstatus (Flux, kubectl wait) sees InProgress, never
	// Current, before the first reconcile.
	// +kubebuilder:default={observedGeneration:0,networkPolicies:0,addressBlocks:0,devices:{matched:0,allowed:0,denied:0}}
	Status AccessPolicyStatus `json:"status,omitempty"`
}

// AccessPolicyList is a list of AccessPolicies.
// +kubebuilder:object:root=true
type AccessPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessPolicy `json:"items"`
}
