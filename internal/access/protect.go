package access

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Protected are itmanager's own namespaces (DESIGN §2): they hold its
// secrets, the devices' tokens, the node upgrade Jobs and people's
// credentials, so no AccessPolicy ever writes into them.
type Protected struct {
	Operator, Devices, Upgrades string
	// Providers maps each Kubernetes AccountProvider's namespace to the
	// provider's name.
	Providers map[string]string
}

// ProtectedFrom builds the protected set with the namespaces of every
// Kubernetes AccountProvider.
func ProtectedFrom(operator, devices, upgrades string, providers map[string]*itmv1.AccountProvider) Protected {
	p := Protected{Operator: operator, Devices: devices, Upgrades: upgrades, Providers: map[string]string{}}
	names := make([]string, 0, len(providers))
	for name := range providers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if k := providers[name].Spec.Kubernetes; k != nil && k.Namespace != "" {
			if _, ok := p.Providers[k.Namespace]; !ok {
				p.Providers[k.Namespace] = name
			}
		}
	}
	return p
}

// Why says why a namespace is protected, "" when it is not.
func (p Protected) Why(ns string) string {
	if ns == "" {
		return ""
	}
	switch ns {
	case p.Operator:
		return ns + " is the operator's namespace and is never a destination"
	case p.Devices:
		return ns + " is the devices' namespace and is never a destination"
	case p.Upgrades:
		return ns + " is the node upgrades' namespace and is never a destination"
	}
	if name, ok := p.Providers[ns]; ok {
		return fmt.Sprintf("%s is the namespace of AccountProvider %s and is never a destination", ns, name)
	}
	return ""
}

// IsSystem reports whether a namespace is Kubernetes' own (kube-*): only a
// policy that names it reaches it, never a selector or a cluster-wide grant.
func IsSystem(ns string) bool { return strings.HasPrefix(ns, "kube-") }

// Selectable reports whether a namespaceSelector, or a cluster-wide grant
// spread over namespaces, may reach ns.
func (p Protected) Selectable(ns string) bool { return !IsSystem(ns) && p.Why(ns) == "" }

// DestinationClaimed reports whether a spec still names ns as a
// destination, by name or by a selector matching its labels, whether or
// not ns may receive objects now. A selector that does not parse claims
// every namespace: what it meant is unknown, so nothing is opened.
func DestinationClaimed(spec *itmv1.AccessPolicySpec, ns string, nsLabels labels.Set) bool {
	for _, d := range spec.Destinations {
		if slices.Contains(d.Namespaces, ns) {
			return true
		}
		if d.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(d.NamespaceSelector)
			if err != nil || sel.Matches(nsLabels) {
				return true
			}
		}
	}
	return false
}

// BindingClaimed reports whether a spec still grants role in ns (ns ""
// for a ClusterRoleBinding), whether or not it may be bound there now.
func BindingClaimed(spec *itmv1.AccessPolicySpec, clusterWideRoles []string, role, ns string) bool {
	for _, ka := range spec.KubernetesAccess {
		if ka.ClusterRole != role {
			continue
		}
		wide := slices.Contains(clusterWideRoles, role)
		switch {
		case len(ka.Namespaces) > 0 && slices.Contains(ka.Namespaces, ns):
			return true
		case len(ka.Namespaces) == 0 && wide && ns == "":
			return true
		case len(ka.Namespaces) == 0 && !wide && ns != "":
			return true
		}
	}
	return false
}
