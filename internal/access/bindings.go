package access

import (
	"cmp"
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/netpol"
)

// GroupPrefix is prepended to a group's name in Group subjects, so an
// AccessPolicy's groups can never be confused with the API server's own
// (system:masters); configure the OIDC authenticator's --oidc-groups-prefix
// (or the structured authentication config) to the same prefix.
const GroupPrefix = "itmanager:"

// ServiceAccounts are the Kubernetes identities of people: the
// ServiceAccounts their Active OnboardingRequests have provisioned in
// Kubernetes AccountProviders, sorted. providers maps name → provider.
func ServiceAccounts(people map[string]bool, requests map[string]*itmv1.OnboardingRequest, providers map[string]*itmv1.AccountProvider) []rbacv1.Subject {
	var out []rbacv1.Subject
	for name := range people {
		r, ok := requests[name]
		if !ok || !IsActive(r) {
			continue
		}
		for _, a := range r.Status.Accounts {
			p, ok := providers[a.Provider]
			if !ok || p.Spec.Type != itmv1.AccountProviderKubernetes || p.Spec.Kubernetes == nil ||
				a.State != itmv1.AccountStateProvisioned || a.ID == "" {
				continue
			}
			out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: p.Spec.Kubernetes.Namespace, Name: a.ID})
		}
	}
	slices.SortFunc(out, compareSubjects)
	return slices.Compact(out)
}

func compareSubjects(a, b rbacv1.Subject) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// BindingInput is what a policy's RBAC bindings depend on.
type BindingInput struct {
	Owner *itmv1.AccessPolicy
	// ServiceAccounts of the people (from ServiceAccounts).
	ServiceAccounts []rbacv1.Subject
	// AllowedRoles are the ClusterRoles the installation lets the operator bind.
	AllowedRoles []string
	// Forbidden says why a namespace may not receive bindings ("" if it may):
	// the operator's, the devices' and the account providers' namespaces.
	Forbidden func(namespace string) string
	// Exists reports whether a namespace exists and is not terminating; the
	// bindings of one that does not are left out until it does. Nil: all do.
	Exists func(namespace string) bool
}

// Bindings compiles spec.kubernetesAccess into ClusterRoleBindings and
// RoleBindings named "itm-<policy>.<role>", sorted, and the problems that
// kept some from being generated. With no subject identity nothing is
// bound.
func Bindings(in BindingInput) ([]*rbacv1.ClusterRoleBinding, []*rbacv1.RoleBinding, []string) {
	p := in.Owner
	subjects := slices.Clone(in.ServiceAccounts)
	for _, g := range p.Spec.Subjects.Groups {
		subjects = append(subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: GroupPrefix + g})
	}
	slices.SortFunc(subjects, compareSubjects)
	subjects = slices.Compact(subjects)

	var crbs []*rbacv1.ClusterRoleBinding
	var rbs []*rbacv1.RoleBinding
	var problems []string
	for i, ka := range p.Spec.KubernetesAccess {
		if !slices.Contains(in.AllowedRoles, ka.ClusterRole) {
			problems = append(problems, fmt.Sprintf("spec.kubernetesAccess[%d].clusterRole: %q is not a role this installation lets itmanager bind (allowed: %v)", i, ka.ClusterRole, in.AllowedRoles))
			continue
		}
		if len(subjects) == 0 {
			continue
		}
		meta := func(ns string) metav1.ObjectMeta {
			return metav1.ObjectMeta{
				Namespace: ns, Name: BindingName(p.Name, ka.ClusterRole),
				Labels: netpol.Labels(p.Name), OwnerReferences: []metav1.OwnerReference{netpol.OwnerReference(p)},
			}
		}
		ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ka.ClusterRole}
		if len(ka.Namespaces) == 0 {
			crbs = append(crbs, &rbacv1.ClusterRoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
				ObjectMeta: meta(""), RoleRef: ref, Subjects: slices.Clone(subjects),
			})
			continue
		}
		for _, ns := range ka.Namespaces {
			if why := in.Forbidden(ns); why != "" {
				problems = append(problems, fmt.Sprintf("spec.kubernetesAccess[%d].namespaces: %s", i, why))
				continue
			}
			if in.Exists != nil && !in.Exists(ns) {
				continue
			}
			rbs = append(rbs, &rbacv1.RoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
				ObjectMeta: meta(ns), RoleRef: ref, Subjects: slices.Clone(subjects),
			})
		}
	}
	slices.SortFunc(crbs, func(a, b *rbacv1.ClusterRoleBinding) int { return cmp.Compare(a.Name, b.Name) })
	crbs = slices.CompactFunc(crbs, func(a, b *rbacv1.ClusterRoleBinding) bool { return a.Name == b.Name })
	slices.SortFunc(rbs, func(a, b *rbacv1.RoleBinding) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	rbs = slices.CompactFunc(rbs, func(a, b *rbacv1.RoleBinding) bool { return a.Namespace == b.Namespace && a.Name == b.Name })
	return crbs, rbs, problems
}

// BindingName is "itm-<policy>.<role>", shortened with a hash when longer
// than a name may be.
func BindingName(policy, role string) string {
	return names.Derive("itm-"+policy+".", role, 253)
}
