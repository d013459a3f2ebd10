package access

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/netpol"
)

// Selectors are a policy's label selectors, parsed once: the controller
// reads with them and the pipeline decides with them.
type Selectors struct {
	// Devices is spec.subjects.deviceSelector (nil: none).
	Devices labels.Selector
	// Namespaces holds, per destination, its namespaceSelector (nil for a
	// destination that names namespaces).
	Namespaces []labels.Selector
}

// ParseSelectors parses a spec's selectors. An error means the spec cannot
// be acted on (the schema accepts any operator string); it names the field.
func ParseSelectors(spec *itmv1.AccessPolicySpec) (Selectors, error) {
	var s Selectors
	var err error
	if s.Devices, err = Selector(spec.Subjects); err != nil {
		return Selectors{}, err
	}
	s.Namespaces = make([]labels.Selector, len(spec.Destinations))
	for i, d := range spec.Destinations {
		if d.NamespaceSelector == nil {
			continue
		}
		if s.Namespaces[i], err = metav1.LabelSelectorAsSelector(d.NamespaceSelector); err != nil {
			return Selectors{}, fmt.Errorf("spec.destinations[%d].namespaceSelector: %w", i, err)
		}
	}
	return s, nil
}

// Snapshot is everything one policy's resolution reads, gathered by the
// controller before any decision.
type Snapshot struct {
	Policy    *itmv1.AccessPolicy
	Selectors Selectors
	// Requests are the OnboardingRequests of the listed users and of every
	// member of the listed groups, by name.
	Requests map[string]*itmv1.OnboardingRequest
	// Candidates are at least every device assigned to the people or
	// matching the device selector, with their live check-ins and
	// conflicts.
	Candidates []Candidate
	// Providers are every AccountProvider, by name.
	Providers map[string]*itmv1.AccountProvider
	// Namespaces, by name: every namespace the spec names (destinations and
	// kubernetesAccess, protected or not), every one a namespaceSelector
	// matches, and all of them when SpreadsOverNamespaces. A name absent
	// here does not exist.
	Namespaces map[string]*corev1.Namespace
	// ServiceAccounts are the metadata of the ServiceAccounts AccountRefs
	// claims that exist, read live.
	ServiceAccounts map[types.NamespacedName]metav1.ObjectMeta
	// NetworkPolicies are the policy's NetworkPolicies in place: how many
	// shards they have is kept while it fits (netpol.Input.Existing).
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// Config is the installation's part of every policy's resolution.
type Config struct {
	// OperatorNamespace, DevicesNamespace and UpgradesNamespace (and every
	// Kubernetes AccountProvider's namespace) are never destinations.
	OperatorNamespace, DevicesNamespace, UpgradesNamespace string
	// BindableRoles are the ClusterRoles the operator may bind.
	BindableRoles []string
	// ClusterWideRoles are those bound cluster-wide by an entry without
	// namespaces.
	ClusterWideRoles []string
}

// Plan is a resolved policy and the objects that enforce it.
type Plan struct {
	Result
	NetworkPolicies     []*networkingv1.NetworkPolicy
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	RoleBindings        []*rbacv1.RoleBinding
	// Forbidden are destinations naming a protected namespace; Refused are
	// kubernetesAccess entries that cannot be bound (a role the
	// installation does not allow, a protected namespace).
	Forbidden, Refused []string
}

// Compute is the pipeline: resolve the subjects to allowed addresses,
// compile them into NetworkPolicies for the destinations, and the
// kubernetesAccess into bindings for the people's identities.
func Compute(s Snapshot, c Config, now time.Time) Plan {
	p := s.Policy
	people := People(p.Spec.Subjects, s.Requests)
	plan := Plan{Result: Resolve(Input{Policy: p, People: people, Selector: s.Selectors.Devices, Candidates: s.Candidates, Now: now})}
	protected := ProtectedFrom(c.OperatorNamespace, c.DevicesNamespace, c.UpgradesNamespace, s.Providers)

	var targets []netpol.Target
	targets, plan.Forbidden = Targets(&p.Spec, s.Selectors, protected, s.Namespaces)
	plan.NetworkPolicies = netpol.Compile(netpol.Input{Owner: p, Targets: targets, Prefixes: plan.Prefixes, Existing: s.NetworkPolicies})

	var sas []rbacv1.Subject
	if len(p.Spec.KubernetesAccess) > 0 {
		sas = ServiceAccounts(AccountRefs(people, s.Requests, s.Providers), s.ServiceAccounts)
	}
	plan.ClusterRoleBindings, plan.RoleBindings, plan.Refused = Bindings(BindingInput{
		Owner: p, ServiceAccounts: sas, AllowedRoles: c.BindableRoles, ClusterWideRoles: c.ClusterWideRoles,
		Namespaces: usableNames(s.Namespaces), Protected: protected,
	})
	return plan
}

// Targets are the existing, non-terminating destination namespaces with
// the destinations that reach them. The rule: a namespace named outright is
// reached (kube-* included: naming it took the rights) unless it is
// protected, which is a problem to report; a selector never reaches a
// protected namespace nor a kube-* one, and that is no problem.
func Targets(spec *itmv1.AccessPolicySpec, sels Selectors, protected Protected, namespaces map[string]*corev1.Namespace) ([]netpol.Target, []string) {
	byNS := map[string][]itmv1.Destination{}
	var problems []string
	usable := func(ns *corev1.Namespace) bool { return UsableNamespace(ns) && protected.Why(ns.Name) == "" }
	for i, d := range spec.Destinations {
		if i < len(sels.Namespaces) && sels.Namespaces[i] != nil {
			for name, ns := range namespaces {
				if sels.Namespaces[i].Matches(labels.Set(ns.Labels)) && usable(ns) && protected.Selectable(name) {
					byNS[name] = append(byNS[name], d)
				}
			}
			continue
		}
		if d.NamespaceSelector != nil {
			continue // not parsed: reaches nothing
		}
		for _, name := range d.Namespaces {
			if why := protected.Why(name); why != "" {
				problems = append(problems, fmt.Sprintf("spec.destinations[%d].namespaces: %s", i, why))
				continue
			}
			// Absent: enforced as soon as the namespace exists.
			if ns, ok := namespaces[name]; ok && usable(ns) {
				byNS[name] = append(byNS[name], d)
			}
		}
	}
	out := make([]netpol.Target, 0, len(byNS))
	for ns, dests := range byNS {
		out = append(out, netpol.Target{Namespace: ns, Destinations: dests})
	}
	return out, problems
}

// UsableNamespace reports whether a namespace can receive objects: it is
// not being deleted.
func UsableNamespace(ns *corev1.Namespace) bool {
	return ns.DeletionTimestamp == nil && ns.Status.Phase != corev1.NamespaceTerminating
}

func usableNames(namespaces map[string]*corev1.Namespace) []string {
	out := make([]string, 0, len(namespaces))
	for name, ns := range namespaces {
		if UsableNamespace(ns) {
			out = append(out, name)
		}
	}
	return out
}
