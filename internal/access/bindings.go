package access

import (
	"cmp"
	"fmt"
	"slices"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/netpol"
)

// GroupPrefix is prepended to a group's name in Group subjects, so an
// AccessPolicy's groups can never be confused with the API server's own
// (system:masters); configure the OIDC authenticator's --oidc-groups-prefix
// (or the structured authentication config) to the same prefix.
const GroupPrefix = "itmanager:"

// AccountRef is a ServiceAccount a person's OnboardingRequest says it
// provisioned, and the UID its ownership mark must carry.
type AccountRef struct {
	Namespace, Name string
	Owner           types.UID
}

// AccountRefs are the ServiceAccounts the Active OnboardingRequests of the
// people say they provisioned in Kubernetes AccountProviders, sorted. They
// are claims read from status: ServiceAccounts binds only those that really
// carry the request's mark. providers maps name → provider.
func AccountRefs(people map[string]bool, requests map[string]*itmv1.OnboardingRequest, providers map[string]*itmv1.AccountProvider) []AccountRef {
	var out []AccountRef
	for name := range people {
		r, ok := requests[name]
		if !ok || !InForce(r) {
			continue
		}
		for _, a := range r.Status.Accounts {
			p, ok := providers[a.Provider]
			if !ok || p.Spec.Type != itmv1.AccountProviderKubernetes || p.Spec.Kubernetes == nil ||
				a.State != itmv1.AccountStateProvisioned || a.ID == "" {
				continue
			}
			out = append(out, AccountRef{Namespace: p.Spec.Kubernetes.Namespace, Name: a.ID, Owner: r.UID})
		}
	}
	slices.SortFunc(out, func(a, b AccountRef) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Owner, b.Owner))
	})
	return slices.Compact(out)
}

// ServiceAccounts are the subjects among refs whose ServiceAccount exists
// (found maps namespace/name to its metadata) and carries the ownership
// mark of the request that claims it: itmanager's label and the request's
// UID. A name taken from status alone (a forged or stale status.accounts)
// binds nothing.
func ServiceAccounts(refs []AccountRef, found map[types.NamespacedName]metav1.ObjectMeta) []rbacv1.Subject {
	var out []rbacv1.Subject
	for _, ref := range refs {
		m, ok := found[types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}]
		if !ok || ref.Owner == "" || m.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue ||
			m.Annotations[accounts.AnnotationOwnerUID] != string(ref.Owner) || m.DeletionTimestamp != nil {
			continue
		}
		out = append(out, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ref.Namespace, Name: ref.Name})
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
	// ClusterWideRoles are the roles an entry without namespaces binds by a
	// ClusterRoleBinding; any other is bound by a RoleBinding in each of
	// Namespaces that Protected lets a cluster-wide grant reach.
	ClusterWideRoles []string
	// Namespaces are the existing, non-terminating namespaces: at least
	// every one an entry names, and all of them when an entry spreads over
	// namespaces (SpreadsOverNamespaces). The bindings of a named namespace
	// not among them are left out until it appears.
	Namespaces []string
	// Protected never receive bindings.
	Protected Protected
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

	usable := make(map[string]bool, len(in.Namespaces))
	for _, ns := range in.Namespaces {
		usable[ns] = true
	}
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
		if len(ka.Namespaces) == 0 && slices.Contains(in.ClusterWideRoles, ka.ClusterRole) {
			crbs = append(crbs, &rbacv1.ClusterRoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
				ObjectMeta: meta(""), RoleRef: ref, Subjects: slices.Clone(subjects),
			})
			continue
		}
		if len(ka.Namespaces) == 0 {
			// "Cluster-wide" never reaches itmanager's own secrets nor
			// Kubernetes' own namespaces.
			for _, ns := range in.Namespaces {
				if in.Protected.Selectable(ns) {
					rbs = append(rbs, &rbacv1.RoleBinding{
						TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
						ObjectMeta: meta(ns), RoleRef: ref, Subjects: slices.Clone(subjects),
					})
				}
			}
			continue
		}
		for _, ns := range ka.Namespaces {
			if why := in.Protected.Why(ns); why != "" {
				problems = append(problems, fmt.Sprintf("spec.kubernetesAccess[%d].namespaces: %s", i, why))
				continue
			}
			if !usable[ns] {
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

// SpreadsOverNamespaces reports whether some kubernetesAccess entry binds a
// role without namespaces that is not a cluster-wide role: it becomes a
// RoleBinding in every namespace, so resolution needs them all.
func SpreadsOverNamespaces(spec *itmv1.AccessPolicySpec, clusterWideRoles []string) bool {
	return slices.ContainsFunc(spec.KubernetesAccess, func(ka itmv1.KubernetesAccess) bool {
		return len(ka.Namespaces) == 0 && !slices.Contains(clusterWideRoles, ka.ClusterRole)
	})
}
