package access

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/netpol"
)

// Withdrawal decides what becomes of a generated object the policy no
// longer wants: while the spec still names where it lives (its destination
// namespace, its role there) it stays in place withdrawn, a NetworkPolicy
// isolating what it selected and a binding binding no one, because
// withdrawing access never opens pods; otherwise it goes.
type Withdrawal struct {
	Policy           *itmv1.AccessPolicy
	ClusterWideRoles []string
	// Namespaces as in Snapshot (a name absent does not exist).
	Namespaces map[string]*corev1.Namespace
	// All keeps every object withdrawn: the spec is invalid, so what it
	// names is unknown.
	All bool
	// Wanted are the NetworkPolicies the policy generates now that exist
	// already (InPlace): an object no longer wanted that selects the same
	// pods as one of them in its namespace (a shard left over when the shard
	// count halved) goes, since that one keeps those pods isolated.
	Wanted []*networkingv1.NetworkPolicy
}

// InPlace are the wanted NetworkPolicies that exist already, controlled by
// p: only one of those may stand in for a surplus shard (Withdrawal.Wanted),
// since it keeps the pods isolated even if this reconcile's write of it
// fails.
func InPlace(p *itmv1.AccessPolicy, want, have []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	exists := map[types.NamespacedName]bool{}
	for _, o := range have {
		if metav1.IsControlledBy(o, p) {
			exists[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = true
		}
	}
	var out []*networkingv1.NetworkPolicy
	for _, o := range want {
		if exists[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] {
			out = append(out, o)
		}
	}
	return out
}

// namespace is the object's namespace if it exists and is not being
// deleted (one being deleted takes its pods and objects along).
func (w Withdrawal) namespace(name string) (*corev1.Namespace, bool) {
	ns, ok := w.Namespaces[name]
	return ns, ok && UsableNamespace(ns)
}

// NetworkPolicy returns o withdrawn, and whether it stays.
func (w Withdrawal) NetworkPolicy(o *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, bool) {
	if !w.All {
		ns, ok := w.namespace(o.Namespace)
		if !ok || !DestinationClaimed(&w.Policy.Spec, o.Namespace, labels.Set(ns.Labels)) {
			return nil, false
		}
		for _, want := range w.Wanted {
			if want.Namespace == o.Namespace && equality.Semantic.DeepEqual(want.Spec.PodSelector, o.Spec.PodSelector) {
				return nil, false
			}
		}
	}
	return netpol.Isolating(w.Policy, o), true
}

// RoleBinding returns o withdrawn, and whether it stays. A binding
// deleted in error grants nothing: one whose namespace is gone goes.
func (w Withdrawal) RoleBinding(o *rbacv1.RoleBinding) (*rbacv1.RoleBinding, bool) {
	if !w.All {
		if _, ok := w.namespace(o.Namespace); !ok || o.RoleRef.Kind != "ClusterRole" ||
			!BindingClaimed(&w.Policy.Spec, w.ClusterWideRoles, o.RoleRef.Name, o.Namespace) {
			return nil, false
		}
	}
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
		ObjectMeta: w.meta(o), RoleRef: o.RoleRef,
	}, true
}

// ClusterRoleBinding returns o withdrawn, and whether it stays.
func (w Withdrawal) ClusterRoleBinding(o *rbacv1.ClusterRoleBinding) (*rbacv1.ClusterRoleBinding, bool) {
	if !w.All && (o.RoleRef.Kind != "ClusterRole" || !BindingClaimed(&w.Policy.Spec, w.ClusterWideRoles, o.RoleRef.Name, "")) {
		return nil, false
	}
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
		ObjectMeta: w.meta(o), RoleRef: o.RoleRef,
	}, true
}

func (w Withdrawal) meta(o metav1.Object) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: o.GetNamespace(), Name: o.GetName(), Labels: netpol.Labels(w.Policy.Name),
		OwnerReferences: []metav1.OwnerReference{netpol.OwnerReference(w.Policy)},
	}
}
