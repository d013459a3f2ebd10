package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AccountProviderType is where accounts live.
// +kubebuilder:validation:Enum=Kubernetes;LDAP
type AccountProviderType string

// Account provider types.
const (
	AccountProviderKubernetes AccountProviderType = "Kubernetes"
	AccountProviderLDAP       AccountProviderType = "LDAP"
)

// Reasons of an AccountProvider's Ready condition.
const (
	// AccountProviderReasonConnected: the last connectivity check succeeded.
	AccountProviderReasonConnected = "Connected"
	// AccountProviderReasonUnreachable: the last check failed in a way a
	// retry may fix.
	AccountProviderReasonUnreachable = "Unreachable"
	// AccountProviderReasonInvalidConfiguration: only a change to the spec
	// or its Secrets can fix the provider.
	AccountProviderReasonInvalidConfiguration = "InvalidConfiguration"
	// AccountProviderReasonNamespaceNotManaged: a Kubernetes provider's
	// namespace exists but lacks the label
	// itmanager.io/managed-namespace=true, so itmanager creates nothing
	// there.
	AccountProviderReasonNamespaceNotManaged = "NamespaceNotManaged"
	// AccountProviderReasonSecretNotFound: a Secret the provider refers to
	// does not exist (yet); it is checked again with backoff, Reconciling
	// meanwhile, since the Secret appearing fixes it without a spec change.
	AccountProviderReasonSecretNotFound = "SecretNotFound"
)

// AccountProviderEventCheckFailed is the reason of the Warning Event when a
// provider that was Ready fails its check (its return is an Event with
// reason AccountProviderReasonConnected).
const AccountProviderEventCheckFailed = "CheckFailed"

// LDAPOffboardAction is what happens to an LDAP entry on offboarding.
// +kubebuilder:validation:Enum=Disable;Delete
type LDAPOffboardAction string

// LDAP offboard actions.
const (
	LDAPOffboardDisable LDAPOffboardAction = "Disable"
	LDAPOffboardDelete  LDAPOffboardAction = "Delete"
)

// KubernetesProviderSpec provisions ServiceAccounts with bound tokens.
type KubernetesProviderSpec struct {
	// namespace holds the ServiceAccounts and kubeconfig Secrets; created if
	// missing. Never a kube-* namespace nor the operator's.
	// +optional
	// +kubebuilder:default=itmanager-users
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('kube-') && self != 'default'",message="spec.kubernetes.namespace must not be default or a kube-* namespace"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.kubernetes.namespace is immutable: moving a provider would mint every person's credentials in another namespace; create a new provider instead"
	Namespace string `json:"namespace,omitempty"`

	// tokenTTL is how long an issued token is valid (at least 10m, at most
	// 720h: a kubeconfig that leaks stops working within a month at the
	// latest); tokens are renewed before they expire.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m')",message="spec.kubernetes.tokenTTL must be at least 10m"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('720h')",message="spec.kubernetes.tokenTTL must be at most 720h"
	TokenTTL *metav1.Duration `json:"tokenTTL,omitempty"`
}

// LDAPProviderSpec provisions entries in an LDAP directory.
// +kubebuilder:validation:XValidation:rule="!self.url.startsWith('ldap://') || has(self.caSecretRef) || (has(self.insecure) && self.insecure)",message="spec.ldap.url: ldap:// sends the bind password in clear text; use ldaps://, StartTLS (set spec.ldap.caSecretRef), or set spec.ldap.insecure: true",fieldPath=".url"
type LDAPProviderSpec struct {
	// url of the directory, ldaps:// or ldap://. On ldap:// the operator
	// uses StartTLS when caSecretRef is set; without it ldap:// is refused
	// unless insecure is true.
	// +required
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^ldaps?://[^\s/]+(:[0-9]+)?/?$`
	URL string `json:"url"`

	// bindDN is the DN the operator binds as.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BindDN string `json:"bindDN"`

	// bindPasswordSecretRef is the Secret key, in the operator namespace,
	// holding the bind password.
	// +required
	BindPasswordSecretRef SecretKeyReference `json:"bindPasswordSecretRef"`

	// usersDN is the DN under which user entries uid=<user> are created.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	UsersDN string `json:"usersDN"`

	// groupsDN is the DN under which group entries are kept.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	GroupsDN string `json:"groupsDN,omitempty"`

	// userObjectClasses are the object classes of user entries.
	// +optional
	// +kubebuilder:default={inetOrgPerson}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z][-A-Za-z0-9]*$`
	UserObjectClasses []string `json:"userObjectClasses,omitempty"`

	// caSecretRef is the Secret key, in the operator namespace, holding the
	// PEM CA bundle that verifies the directory's certificate.
	// +optional
	CASecretRef *SecretKeyReference `json:"caSecretRef,omitempty"`

	// insecure allows an ldap:// url without StartTLS, so the bind password
	// travels in clear text. For test directories on loopback only.
	// +optional
	// +kubebuilder:default=false
	Insecure bool `json:"insecure,omitempty"`

	// offboardAction is Disable (default: lock the entry) or Delete.
	// +optional
	// +kubebuilder:default=Disable
	OffboardAction LDAPOffboardAction `json:"offboardAction,omitempty"`
}

// AccountProviderSpec says where accounts live and how to reach it.
// +kubebuilder:validation:XValidation:rule="self.type != 'Kubernetes' || (has(self.kubernetes) && !has(self.ldap))",message="type Kubernetes requires spec.kubernetes and forbids spec.ldap"
// +kubebuilder:validation:XValidation:rule="self.type != 'LDAP' || (has(self.ldap) && !has(self.kubernetes))",message="type LDAP requires spec.ldap and forbids spec.kubernetes"
type AccountProviderSpec struct {
	// type of the provider (immutable).
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.type is immutable: create a new provider instead"
	Type AccountProviderType `json:"type"`

	// default providers are used by OnboardingRequests that name none.
	// +optional
	Default bool `json:"default,omitempty"`

	// kubernetes configures a Kubernetes provider (type Kubernetes).
	// +optional
	Kubernetes *KubernetesProviderSpec `json:"kubernetes,omitempty"`

	// ldap configures an LDAP provider (type LDAP).
	// +optional
	LDAP *LDAPProviderSpec `json:"ldap,omitempty"`
}

// AccountProviderStatus reports the last connectivity check.
type AccountProviderStatus struct {
	// observedGeneration is the generation the status reflects.
	ObservedGeneration int64 `json:"observedGeneration"`

	// message describes the last connectivity check.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// conditions: Ready (the last connectivity check succeeded).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AccountProvider is a place where accounts live: Kubernetes ServiceAccounts
// or an LDAP directory. Credentials come only from Secrets in the operator
// namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=acp,categories=itmanager
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Default",type=boolean,JSONPath=`.spec.default`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AccountProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says where accounts live.
	// +required
	Spec AccountProviderSpec `json:"spec"`

	// status reports the last connectivity check.
	// +optional
	// A status nobody wrote yet reads as observedGeneration 0, below
	// generation 1, so kstatus (Flux, kubectl wait) sees InProgress, never
	// Current, before the first reconcile.
	// +kubebuilder:default={observedGeneration:0}
	Status AccountProviderStatus `json:"status,omitempty"`
}

// AccountProviderList is a list of AccountProviders.
// +kubebuilder:object:root=true
type AccountProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccountProvider `json:"items"`
}
