package owned

import (
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// NetworkPolicies: the content is the spec.
var NetworkPolicies = Kind[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList]{
	Name:    "NetworkPolicy",
	NewList: func() *networkingv1.NetworkPolicyList { return &networkingv1.NetworkPolicyList{} },
	Items:   func(l *networkingv1.NetworkPolicyList) []*networkingv1.NetworkPolicy { return pointers(l.Items) },
	SameContent: func(cur, desired *networkingv1.NetworkPolicy) bool {
		return equality.Semantic.DeepEqual(cur.Spec, desired.Spec)
	},
	Overwrite: func(dst, src *networkingv1.NetworkPolicy) { dst.Spec = *src.Spec.DeepCopy() },
}

// ClusterRoleBindings: the content is the role reference and the subjects.
var ClusterRoleBindings = Kind[*rbacv1.ClusterRoleBinding, *rbacv1.ClusterRoleBindingList]{
	Name:    "ClusterRoleBinding",
	NewList: func() *rbacv1.ClusterRoleBindingList { return &rbacv1.ClusterRoleBindingList{} },
	Items:   func(l *rbacv1.ClusterRoleBindingList) []*rbacv1.ClusterRoleBinding { return pointers(l.Items) },
	SameContent: func(cur, desired *rbacv1.ClusterRoleBinding) bool {
		return sameBinding(cur.RoleRef, desired.RoleRef, cur.Subjects, desired.Subjects)
	},
	Overwrite: func(dst, src *rbacv1.ClusterRoleBinding) {
		dst.RoleRef, dst.Subjects = src.RoleRef, slices.Clone(src.Subjects)
	},
}

// RoleBindings: the content is the role reference and the subjects.
var RoleBindings = Kind[*rbacv1.RoleBinding, *rbacv1.RoleBindingList]{
	Name:    "RoleBinding",
	NewList: func() *rbacv1.RoleBindingList { return &rbacv1.RoleBindingList{} },
	Items:   func(l *rbacv1.RoleBindingList) []*rbacv1.RoleBinding { return pointers(l.Items) },
	SameContent: func(cur, desired *rbacv1.RoleBinding) bool {
		return sameBinding(cur.RoleRef, desired.RoleRef, cur.Subjects, desired.Subjects)
	},
	Overwrite: func(dst, src *rbacv1.RoleBinding) {
		dst.RoleRef, dst.Subjects = src.RoleRef, slices.Clone(src.Subjects)
	},
}

func sameBinding(a, b rbacv1.RoleRef, as, bs []rbacv1.Subject) bool {
	return equality.Semantic.DeepEqual(a, b) && equality.Semantic.DeepEqual(as, bs)
}

func pointers[T any](items []T) []*T {
	out := make([]*T, 0, len(items))
	for i := range items {
		out = append(out, &items[i])
	}
	return out
}
