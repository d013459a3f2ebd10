package v1alpha1

// Condition types shared by every kind (kstatus conventions, so Argo CD,
// Flux and `kubectl wait --for=condition=Ready` understand them).
const (
	// ConditionReady summarises the object. It is never True before the
	// first successful reconcile of the current generation.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is still converging.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the operator cannot make progress
	// without a change to the spec (or to something the spec refers to).
	ConditionStalled = "Stalled"
)

// Condition reasons shared by every kind.
const (
	// ReasonReconciled means the last reconcile of the current generation
	// succeeded.
	ReasonReconciled = "Reconciled"
	// ReasonProgressing means work is under way.
	ReasonProgressing = "Progressing"
	// ReasonInvalidSpec means the spec cannot be acted on; the message says
	// which field.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonReconcileError means the last reconcile failed with a transient
	// error and will be retried.
	ReasonReconcileError = "ReconcileError"
)

// Labels and annotations written or read by the operator.
const (
	// LabelManagedBy marks every object the operator generates.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on generated objects.
	ManagedByValue = "itmanager"
	// LabelOSVersion on a Node overrides nodeInfo.osImage as the observed
	// OS version of its Device.
	LabelOSVersion = "itmanager.io/os-version"
	// LabelDrain on a Pod set to DrainSkip keeps the pod on its node when a
	// maintenance window drains the node for an upgrade (as Cluster API's
	// cluster.x-k8s.io/drain: skip). The chart sets it on itmanager's own
	// Pods, which must keep running to finish the upgrade (on a node that
	// holds both replicas, evicting them would leave nobody to uncordon it).
	LabelDrain = "itmanager.io/drain"
	// DrainSkip is the value of LabelDrain that skips the pod.
	DrainSkip = "skip"
	// AnnotationRequestedBy holds the username that created an
	// OnboardingRequest. It is stamped at admission and cannot be changed.
	AnnotationRequestedBy = "itmanager.io/requested-by"
	// AnnotationForceOffboard finishes offboarding when a provider is gone
	// for good; allowed only to holders of the approve verb.
	AnnotationForceOffboard = "itmanager.io/force-offboard"
)

// SecretKeyReference names one key of a Secret in the operator namespace.
type SecretKeyReference struct {
	// name of the Secret in the operator namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`

	// key within the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ObjectReference names a namespaced object.
type ObjectReference struct {
	// namespace of the object.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// name of the object.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}
