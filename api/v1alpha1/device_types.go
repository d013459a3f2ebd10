package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeviceClass is the kind of hardware a Device is.
// +kubebuilder:validation:Enum=Laptop;Desktop;Server;Phone;Tablet;NetworkAppliance;Node;Other
type DeviceClass string

// Device classes.
const (
	DeviceClassLaptop           DeviceClass = "Laptop"
	DeviceClassDesktop          DeviceClass = "Desktop"
	DeviceClassServer           DeviceClass = "Server"
	DeviceClassPhone            DeviceClass = "Phone"
	DeviceClassTablet           DeviceClass = "Tablet"
	DeviceClassNetworkAppliance DeviceClass = "NetworkAppliance"
	DeviceClassNode             DeviceClass = "Node"
	DeviceClassOther            DeviceClass = "Other"
)

// OSFamily is the operating system family of a Device.
// +kubebuilder:validation:Enum=Linux;Windows;macOS;iOS;Android;Other
type OSFamily string

// Operating system families.
const (
	OSFamilyLinux   OSFamily = "Linux"
	OSFamilyWindows OSFamily = "Windows"
	OSFamilyMacOS   OSFamily = "macOS"
	OSFamilyIOS     OSFamily = "iOS"
	OSFamilyAndroid OSFamily = "Android"
	OSFamilyOther   OSFamily = "Other"
)

// DeviceLifecycle is where a Device stands in its life.
// +kubebuilder:validation:Enum=Active;Retired;Lost
type DeviceLifecycle string

// Device lifecycles. Retired and Lost devices never get access and are never
// assigned.
const (
	DeviceLifecycleActive  DeviceLifecycle = "Active"
	DeviceLifecycleRetired DeviceLifecycle = "Retired"
	DeviceLifecycleLost    DeviceLifecycle = "Lost"
)

// DevicePhase is the derived summary of a Device.
// +kubebuilder:validation:Enum=Available;Assigned;Retired;Lost
type DevicePhase string

// Device phases.
const (
	DevicePhaseAvailable DevicePhase = "Available"
	DevicePhaseAssigned  DevicePhase = "Assigned"
	DevicePhaseRetired   DevicePhase = "Retired"
	DevicePhaseLost      DevicePhase = "Lost"
)

// UpgradeState is the progress of one device upgrade.
// +kubebuilder:validation:Enum=Pending;Authorized;InProgress;Succeeded;Failed
type UpgradeState string

// Upgrade states. An agent may move an upgrade only along
// Authorized → InProgress → Succeeded|Failed.
const (
	UpgradeStatePending    UpgradeState = "Pending"
	UpgradeStateAuthorized UpgradeState = "Authorized"
	UpgradeStateInProgress UpgradeState = "InProgress"
	UpgradeStateSucceeded  UpgradeState = "Succeeded"
	UpgradeStateFailed     UpgradeState = "Failed"
)

// Device condition types (besides Ready).
const (
	// DeviceConditionCheckedIn is True while the last check-in is fresher
	// than the manager's threshold.
	DeviceConditionCheckedIn = "CheckedIn"
	// DeviceConditionUpToDate is True when the observed OS version equals
	// spec.os.targetVersion, or no target is set.
	DeviceConditionUpToDate = "UpToDate"
)

// Device condition reasons.
const (
	ReasonCheckInFresh    = "CheckInFresh"
	ReasonCheckInStale    = "CheckInStale"
	ReasonNeverCheckedIn  = "NeverCheckedIn"
	ReasonVersionMatches  = "VersionMatches"
	ReasonNoTargetVersion = "NoTargetVersion"
	ReasonVersionDiffers  = "VersionDiffers"
	ReasonVersionUnknown  = "VersionUnknown"
)

// Reasons of a Device's Ready condition.
const (
	// ReasonAddressConflict: another Device claims one of its addresses;
	// the address is denied for all of them.
	ReasonAddressConflict = "AddressConflict"
	// ReasonAddressOutsideRanges: a static (or recorded) address lies
	// outside the manager's --agent-address-cidrs and does not count.
	ReasonAddressOutsideRanges = "AddressOutsideRanges"
	// ReasonAwaitingCheckIn: a device that should check in has not yet
	// (Ready stays True: CheckedIn tells freshness, Ready does not).
	ReasonAwaitingCheckIn = "AwaitingCheckIn"
	// ReasonAwaitingEnrolment: the agent's enrolment (its Lease and
	// Secret) is not done yet; Ready=False and Reconciling.
	ReasonAwaitingEnrolment = "AwaitingEnrolment"
	// ReasonDeviceRetired: spec.lifecycle is Retired.
	ReasonDeviceRetired = "Retired"
	// ReasonDeviceLost: spec.lifecycle is Lost.
	ReasonDeviceLost = "Lost"
	// ReasonNoCheckInNeeded: the device has no agent and is not a Node.
	ReasonNoCheckInNeeded = "NoCheckInExpected"
	// ReasonDeviceCheckedIn: the device checks in.
	ReasonDeviceCheckedIn = "CheckedIn"
)

// Reasons of Events about Devices.
const (
	// ReasonCheckedInAgain: a device that had stopped checking in is back.
	ReasonCheckedInAgain = "CheckedInAgain"
	// ReasonAddressConflictResolved: no other Device claims its addresses
	// any more.
	ReasonAddressConflictResolved = "AddressConflictResolved"
	// ReasonNodeDeviceNameTaken: a Device named for a Node was not made by
	// Node discovery, which never adopts it.
	ReasonNodeDeviceNameTaken = "NodeDeviceNameTaken"
	// ReasonEnrolmentConflict: the enrolment Secret's name is taken by a
	// Secret itmanager did not create (an Event, and Ready=False with
	// Stalled).
	ReasonEnrolmentConflict = "EnrolmentConflict"
	// ReasonAgentTokenRotated: the enrolment was rewritten with a new
	// token; the old one no longer works.
	ReasonAgentTokenRotated = "AgentTokenRotated"
	// ReasonAgentRevoked: the agent was disabled and its enrolment deleted.
	ReasonAgentRevoked = "AgentRevoked"
)

// Hardware identifies the physical device.
type Hardware struct {
	// vendor is the manufacturer, for example "Lenovo".
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Vendor string `json:"vendor,omitempty"`

	// model is the vendor's model name, for example "ThinkPad X1 Carbon Gen 12".
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Model string `json:"model,omitempty"`

	// serialNumber is the vendor's serial number.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	SerialNumber string `json:"serialNumber,omitempty"`

	// assetTag is the organisation's inventory tag.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	AssetTag string `json:"assetTag,omitempty"`
}

// OSSpec is the operating system a device runs and should run.
type OSSpec struct {
	// family is the operating system family.
	// +optional
	Family OSFamily `json:"family,omitempty"`

	// targetVersion is the version this device should run. MaintenanceWindows
	// upgrade devices whose observed version differs from it.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	TargetVersion string `json:"targetVersion,omitempty"`
}

// AgentSpec configures the itmanager agent on a device.
type AgentSpec struct {
	// enabled enrols an agent: the operator creates the enrolment Secret
	// "<device>-agent" and the Lease "<device>" in the devices namespace.
	// Turning it off deletes both and the token stops working at once.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
}

// DeviceSpec is what the owner of a device declares about it.
// +kubebuilder:validation:XValidation:rule="self.class == 'Node' || !has(self.nodeName)",message="spec.nodeName may only be set when spec.class is Node",fieldPath=".nodeName"
// +kubebuilder:validation:XValidation:rule="self.class != 'Node' || has(self.nodeName)",message="spec.nodeName is required when spec.class is Node",fieldPath=".nodeName"
// +kubebuilder:validation:XValidation:rule="self.class != 'Node' || !has(self.assignee)",message="spec.assignee may not be set when spec.class is Node: Node devices are infrastructure, never a person's device",fieldPath=".assignee"
type DeviceSpec struct {
	// class is the kind of device.
	// +required
	Class DeviceClass `json:"class"`

	// hardware identifies the physical device.
	// +optional
	Hardware *Hardware `json:"hardware,omitempty"`

	// os is the operating system family and the version the device should run.
	// +optional
	OS *OSSpec `json:"os,omitempty"`

	// assignee is the username of the person the device is assigned to, set by
	// hand or by onboarding. Never set on class Node. Setting or changing it
	// (like spec.addresses and metadata.labels) by hand requires the verb
	// "assign" on the Device: the device carries its person's access.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Assignee string `json:"assignee,omitempty"`

	// addresses are static IP addresses, for devices without an agent. Only
	// those inside the manager's --agent-address-cidrs count.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:items:XValidation:rule="isIP(self)",message="spec.addresses must be IP addresses"
	Addresses []string `json:"addresses,omitempty"`

	// nodeName is, for class Node, the name of the Node this device mirrors.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName,omitempty"`

	// lifecycle is Active, Retired or Lost. Retired and Lost devices never get
	// access and are never assigned.
	// +optional
	// +kubebuilder:default=Active
	Lifecycle DeviceLifecycle `json:"lifecycle,omitempty"`

	// agent configures the itmanager agent on this device.
	// +optional
	Agent *AgentSpec `json:"agent,omitempty"`
}

// ObservedFacts are the facts last reported by the device (its agent, or the
// Node for class Node). Unknown facts are absent and never count as good.
type ObservedFacts struct {
	// osVersion is the operating system version the device runs.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	OSVersion string `json:"osVersion,omitempty"`

	// hostname the device reports.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Hostname string `json:"hostname,omitempty"`

	// addresses the device reports (only those inside the manager's
	// --agent-address-cidrs count).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:items:XValidation:rule="isIP(self)",message="status.observed.addresses must be IP addresses"
	Addresses []string `json:"addresses,omitempty"`

	// diskEncrypted is whether the system disk is encrypted; absent when
	// unknown, and unknown is not true.
	// +optional
	DiskEncrypted *bool `json:"diskEncrypted,omitempty"`

	// agentVersion is the version of the agent that reported these facts.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgentVersion string `json:"agentVersion,omitempty"`

	// attributes are extra facts, for AccessPolicy requiredAttributes.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 63 && size(self[k]) <= 256)",message="status.observed.attributes keys are at most 63 and values at most 256 characters"
	Attributes map[string]string `json:"attributes,omitempty"`
}

// UpgradeStatus is the progress of the device's current or last upgrade.
type UpgradeStatus struct {
	// state of the upgrade.
	// +required
	State UpgradeState `json:"state"`

	// targetVersion the upgrade moves the device to.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	TargetVersion string `json:"targetVersion,omitempty"`

	// window is the name of the MaintenanceWindow the upgrade runs in.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Window string `json:"window,omitempty"`

	// startedAt is when the upgrade started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// finishedAt is when the upgrade succeeded or failed.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`

	// attempts counts the upgrade attempts for targetVersion.
	Attempts int32 `json:"attempts"`

	// message explains the state in words.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// DeviceStatus is what the operator and the device's agent observed.
type DeviceStatus struct {
	// observedGeneration is the generation the status reflects. Always
	// serialized by the operator, but not required: the check-in service
	// applies status.observed on its own, possibly before the operator's
	// first status write.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration"`

	// phase is Available, Assigned, Retired or Lost.
	// +optional
	Phase DevicePhase `json:"phase,omitempty"`

	// lastCheckIn is when the last check-in was received. It is refreshed when
	// CheckedIn changes and otherwise at most every few minutes; the device's
	// Lease holds the live value.
	// +optional
	LastCheckIn *metav1.Time `json:"lastCheckIn,omitempty"`

	// observed are the facts the device last reported.
	// +optional
	Observed *ObservedFacts `json:"observed,omitempty"`

	// upgrade is the progress of the current or last upgrade.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`

	// conditions: Ready, CheckedIn, UpToDate.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Device is one managed device: a laptop, desktop, server, phone, tablet,
// network appliance or Kubernetes Node. Name it by a stable identifier (asset
// tag or serial), never by IP address.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=dev,categories=itmanager
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.spec.class`
// +kubebuilder:printcolumn:name="Assignee",type=string,JSONPath=`.spec.assignee`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Observed",type=string,JSONPath=`.status.observed.osVersion`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.os.targetVersion`
// +kubebuilder:printcolumn:name="Checked In",type=date,JSONPath=`.status.lastCheckIn`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="metadata.name must be at most 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
type Device struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the owner declares about the device.
	// +required
	Spec DeviceSpec `json:"spec"`

	// status is what the operator and the agent observed.
	// +optional
	// A status nobody wrote yet reads as observedGeneration 0, below
	// generation 1, so kstatus (Flux, kubectl wait) sees InProgress, never
	// Current, before the first reconcile.
	// +kubebuilder:default={observedGeneration:0}
	Status DeviceStatus `json:"status,omitempty"`
}

// DeviceList is a list of Devices.
// +kubebuilder:object:root=true
type DeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Device `json:"items"`
}
