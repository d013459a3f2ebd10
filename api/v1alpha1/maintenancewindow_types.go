package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// MaintenanceWindow condition types (besides Ready).
const (
	// MaintenanceConditionWindowOpen is True while a window is open and no
	// blackout applies.
	MaintenanceConditionWindowOpen = "WindowOpen"
	// MaintenanceConditionProgressing is True while upgrades are running.
	MaintenanceConditionProgressing = "Progressing"
	// MaintenanceConditionDegraded is True when the failure budget is spent
	// or a drain is blocked.
	MaintenanceConditionDegraded = "Degraded"
)

// MaintenanceWindow condition reasons and blockedBy values.
const (
	ReasonOutsideWindow   = "OutsideWindow"
	ReasonBlackout        = "Blackout"
	ReasonPaused          = "Paused"
	ReasonFailureBudget   = "FailureBudgetExhausted"
	ReasonDrainBlocked    = "DrainBlockedByPDB"
	ReasonStartCutoff     = "StartCutoff"
	ReasonWindowOpen      = "WindowOpen"
	ReasonRolloutComplete = "RolloutComplete"
)

// More MaintenanceWindow condition reasons.
const (
	// MaintenanceReasonUpgrading: devices are upgrading (Progressing True,
	// and Reconciling while the window is open).
	MaintenanceReasonUpgrading = "Upgrading"
	// MaintenanceReasonAsExpected: no failure budget exhausted, no drain
	// blocked (Degraded False).
	MaintenanceReasonAsExpected = "AsExpected"
	// MaintenanceReasonApplyFailed: the last reconcile could not apply the
	// rollout (Ready False); it is retried.
	MaintenanceReasonApplyFailed = "ApplyFailed"
)

// MaintenanceWindow event reasons.
const (
	MaintenanceEventWindowOpened     = "WindowOpened"
	MaintenanceEventWindowClosed     = "WindowClosed"
	MaintenanceEventUpgradeStarted   = "UpgradeStarted"
	MaintenanceEventUpgradeSucceeded = "UpgradeSucceeded"
	MaintenanceEventUpgradeFailed    = "UpgradeFailed"
)

// MaintenanceWindowFinalizer holds a deleted window until the upgrade
// claims it left on Devices are released, so no device stays Authorized
// (or InProgress, with no timeout) for a window that is gone.
const MaintenanceWindowFinalizer = "itmanager.io/release-upgrade-claims"

// Window is a recurring period in which devices may be changed.
type Window struct {
	// schedule is a 5-field cron expression (minute hour day-of-month month
	// day-of-week) in spec.timeZone. Restricting both day-of-month and
	// day-of-week is rejected.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	Schedule string `json:"schedule"`

	// duration is how long each window stays open (elapsed time).
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="duration must be positive"
	Duration metav1.Duration `json:"duration"`
}

// Blackout is a period in which nothing is changed, whatever the windows say:
// either a fixed interval (start, end) or a recurring one (schedule, duration).
// +kubebuilder:validation:XValidation:rule="(has(self.start) && has(self.end) && !has(self.schedule) && !has(self.duration)) || (!has(self.start) && !has(self.end) && has(self.schedule) && has(self.duration))",message="each blackout must set either start and end, or schedule and duration"
// +kubebuilder:validation:XValidation:rule="!has(self.start) || !has(self.end) || timestamp(self.end) > timestamp(self.start)",message="end must be after start",fieldPath=".end"
type Blackout struct {
	// start of a fixed blackout (RFC 3339).
	// +optional
	Start *metav1.Time `json:"start,omitempty"`

	// end of a fixed blackout (RFC 3339), exclusive.
	// +optional
	End *metav1.Time `json:"end,omitempty"`

	// schedule of a recurring blackout, 5-field cron in spec.timeZone.
	// +optional
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	Schedule string `json:"schedule,omitempty"`

	// duration of each recurring blackout.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="duration must be positive"
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// Rollout limits how fast devices are upgraded.
type Rollout struct {
	// maxUnavailable is how many devices may be upgrading at once: a number
	// (at least 1) or a percentage of the selected devices (0-100%, rounded
	// down, at least 1).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9]?[0-9])%$')",message="spec.rollout.maxUnavailable must be an integer of at least 1 or a percentage from 0% to 100%"
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// maxFailures halts the rollout in the current window after this many
	// failed upgrades.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxFailures *int32 `json:"maxFailures,omitempty"`

	// upgradeTimeout fails an upgrade that has not finished in this time.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.rollout.upgradeTimeout must be a positive duration"
	UpgradeTimeout *metav1.Duration `json:"upgradeTimeout,omitempty"`
}

// Drain configures how Node devices are drained (eviction API only, so
// PodDisruptionBudgets are respected; a drain that times out fails the device
// and is never forced).
type Drain struct {
	// timeout fails the device when its drain has not finished in this time.
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.drain.timeout must be a positive duration"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// deleteEmptyDirData evicts pods that use emptyDir volumes (their data
	// is lost).
	// +optional
	DeleteEmptyDirData bool `json:"deleteEmptyDirData,omitempty"`

	// ignoreDaemonSets leaves DaemonSet pods in place (default true).
	// +optional
	// +kubebuilder:default=true
	IgnoreDaemonSets *bool `json:"ignoreDaemonSets,omitempty"`
}

// NodeUpgrade is the Job container that upgrades a Node.
type NodeUpgrade struct {
	// image of the upgrade container.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image"`

	// command of the upgrade container.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command,omitempty"`

	// args of the upgrade container.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	Args []string `json:"args,omitempty"`
}

// MaintenanceWindowSpec says when the selected devices may be changed.
type MaintenanceWindowSpec struct {
	// selector selects the Devices this window upgrades.
	// +required
	Selector metav1.LabelSelector `json:"selector"`

	// timeZone is the IANA time zone of the schedules, for example
	// "Europe/Berlin".
	// +optional
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	TimeZone string `json:"timeZone,omitempty"`

	// windows are the recurring periods in which devices may be changed.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Windows []Window `json:"windows"`

	// blackouts are periods in which nothing changes; they always win.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Blackouts []Blackout `json:"blackouts,omitempty"`

	// startCutoff: no new device starts this close to the window's end.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	StartCutoff *metav1.Duration `json:"startCutoff,omitempty"`

	// rollout limits how fast devices are upgraded.
	// +optional
	// +kubebuilder:default={}
	Rollout Rollout `json:"rollout,omitempty"`

	// drain configures how Node devices are drained.
	// +optional
	// +kubebuilder:default={}
	Drain Drain `json:"drain,omitempty"`

	// nodeUpgrade is the Job that upgrades a Node device.
	// +optional
	NodeUpgrade *NodeUpgrade `json:"nodeUpgrade,omitempty"`

	// paused stops new upgrades; in-flight ones finish.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// Interval is a half-open period [start, end).
type Interval struct {
	// start of the interval.
	// +required
	Start metav1.Time `json:"start"`
	// end of the interval, exclusive.
	// +required
	End metav1.Time `json:"end"`
}

// UpgradeCounts counts devices for the current window (or the last one).
type UpgradeCounts struct {
	// pending devices still need an upgrade.
	Pending int32 `json:"pending"`
	// inProgress devices are upgrading.
	InProgress int32 `json:"inProgress"`
	// succeeded devices were upgraded.
	Succeeded int32 `json:"succeeded"`
	// failed devices failed to upgrade.
	Failed int32 `json:"failed"`
}

// MaintenanceWindowStatus reports the window and the rollout in it.
type MaintenanceWindowStatus struct {
	// observedGeneration is the generation the status reflects.
	ObservedGeneration int64 `json:"observedGeneration"`

	// windowOpen is true while a window is open and no blackout applies.
	WindowOpen bool `json:"windowOpen"`

	// currentWindow is the open window, if any.
	// +optional
	CurrentWindow *Interval `json:"currentWindow,omitempty"`

	// nextWindow is the next window that will open.
	// +optional
	NextWindow *Interval `json:"nextWindow,omitempty"`

	// blockedBy says why nothing is progressing (outside window, blackout,
	// paused, failure budget, drain blocked by a PodDisruptionBudget).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	BlockedBy string `json:"blockedBy,omitempty"`

	// devices counts devices for the current window, or the last one.
	Devices UpgradeCounts `json:"devices"`

	// conditions: Ready, WindowOpen, Progressing, Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MaintenanceWindow says when the selected devices may be changed. Outside
// every window of a device nothing is upgraded; blackouts always win.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mw,categories=itmanager
// +kubebuilder:printcolumn:name="Time Zone",type=string,JSONPath=`.spec.timeZone`
// +kubebuilder:printcolumn:name="Open",type=boolean,JSONPath=`.status.windowOpen`
// +kubebuilder:printcolumn:name="Next",type=string,JSONPath=`.status.nextWindow.start`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.devices.pending`
// +kubebuilder:printcolumn:name="Running",type=integer,JSONPath=`.status.devices.inProgress`
// +kubebuilder:printcolumn:name="Done",type=integer,JSONPath=`.status.devices.succeeded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.devices.failed`
// +kubebuilder:printcolumn:name="Blocked By",type=string,JSONPath=`.status.blockedBy`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 50 characters (lowercase letters, digits and '-')"
type MaintenanceWindow struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says when the selected devices may be changed.
	// +required
	Spec MaintenanceWindowSpec `json:"spec"`

	// status reports the window and the rollout in it.
	// +optional
	// A status nobody wrote yet reads as observedGeneration 0, below
	// generation 1, so kstatus (Flux, kubectl wait) sees InProgress, never
	// Current, before the first reconcile.
	// +kubebuilder:default={observedGeneration:0,windowOpen:false,devices:{pending:0,inProgress:0,succeeded:0,failed:0}}
	Status MaintenanceWindowStatus `json:"status,omitempty"`
}

// MaintenanceWindowList is a list of MaintenanceWindows.
// +kubebuilder:object:root=true
type MaintenanceWindowList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MaintenanceWindow `json:"items"`
}
