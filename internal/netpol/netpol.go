// Package netpol compiles an AccessPolicy's allowed addresses into
// NetworkPolicies. It is pure and deterministic: the same input always gives
// byte-identical objects, so the controller writes only when something
// really changed.
package netpol

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// MaxCIDRsPerObject bounds the ipBlocks of one NetworkPolicy: 1,000 CIDRs
// are about 40 KB, far below the API server's object size limit, and small
// enough for every CNI to program quickly.
const MaxCIDRsPerObject = 1000

// Labels on every generated object (besides itmv1.LabelManagedBy).
const (
	LabelAccessPolicy = "itmanager.io/access-policy"
)

// Target is one destination namespace with the destinations that name it.
type Target struct {
	Namespace    string
	Destinations []itmv1.Destination
}

// Input is what a policy's NetworkPolicies depend on.
type Input struct {
	// Owner is the AccessPolicy (its name and UID are used).
	Owner   *itmv1.AccessPolicy
	Targets []Target
	// Prefixes are the aggregated allowed addresses, sorted.
	Prefixes []netip.Prefix
	// Existing are the policy's NetworkPolicies in place (any namespace):
	// their number tells how many shards there are, which changes only
	// when it must (see shards).
	Existing []*networkingv1.NetworkPolicy
	// MaxCIDRs overrides MaxCIDRsPerObject (tests); zero means the default.
	MaxCIDRs int
}

// Name is the name of the n-th NetworkPolicy of a policy in one namespace:
// "itm-<policy>", then "itm-<policy>.<n>".
func Name(policy string, n int) string {
	if n == 0 {
		return "itm-" + policy
	}
	return "itm-" + policy + "." + strconv.Itoa(n)
}

// Compile returns the NetworkPolicies for every target namespace, by
// namespace and then index. Destinations of one namespace that select the same pods
// share objects (their ports are merged); each distinct podSelector gets its
// own, since a NetworkPolicy has one. Above the CIDR limit each gets one
// object per shard (see shards): group g's shard k is object g×shards+k.
// With no allowed address each gets no ingress rule at all, which isolates
// the selected pods: an empty "from" would mean "from anywhere"; so does an
// object whose shard happens to be empty, the others admitting the rest.
func Compile(in Input) []*networkingv1.NetworkPolicy {
	maxCIDRs := cmp.Or(in.MaxCIDRs, MaxCIDRsPerObject)
	targets := slices.Clone(in.Targets)
	slices.SortFunc(targets, func(a, b Target) int { return cmp.Compare(a.Namespace, b.Namespace) })
	prev := shardsInPlace(in.Owner, in.Existing, targets)
	var peers [][]networkingv1.NetworkPolicyPeer
	for _, shard := range shards(in.Prefixes, prev, maxCIDRs) {
		ps := make([]networkingv1.NetworkPolicyPeer, 0, len(shard))
		for _, p := range shard {
			ps = append(ps, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: p.String()}})
		}
		peers = append(peers, ps)
	}

	var out []*networkingv1.NetworkPolicy
	for _, t := range targets {
		n := 0
		for _, g := range groupBySelector(t.Destinations) {
			for _, from := range peers {
				out = append(out, object(in.Owner, t.Namespace, n, g, from))
				n++
			}
		}
	}
	return out
}

// group is the destinations of a namespace that select the same pods.
type group struct {
	selector metav1.LabelSelector
	// ports is nil when any destination of the group allows every port.
	ports    []networkingv1.NetworkPolicyPort
	anyPorts bool
}

func groupBySelector(dests []itmv1.Destination) []*group {
	var groups []*group
	for _, d := range dests {
		sel := normalSelector(d.PodSelector)
		i := slices.IndexFunc(groups, func(g *group) bool { return equality.Semantic.DeepEqual(g.selector, sel) })
		if i < 0 {
			groups = append(groups, &group{selector: sel})
			i = len(groups) - 1
		}
		g := groups[i]
		if len(d.Ports) == 0 {
			g.anyPorts = true
		}
		for _, p := range d.Ports {
			np := networkingv1.NetworkPolicyPort{
				Protocol: ptr.To(corev1.Protocol(cmp.Or(p.Protocol, itmv1.ProtocolTCP))),
				Port:     ptr.To(intstr.FromInt32(p.Port)),
			}
			if p.EndPort != nil && *p.EndPort > p.Port {
				np.EndPort = ptr.To(*p.EndPort)
			}
			g.ports = append(g.ports, np)
		}
	}
	// A stable order that does not depend on the order of destinations.
	for _, g := range groups {
		if g.anyPorts {
			g.ports = nil
			continue
		}
		slices.SortFunc(g.ports, comparePorts)
		g.ports = slices.CompactFunc(g.ports, func(a, b networkingv1.NetworkPolicyPort) bool { return comparePorts(a, b) == 0 })
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return cmp.Compare(selectorKey(a.selector), selectorKey(b.selector)) })
	return groups
}

func comparePorts(a, b networkingv1.NetworkPolicyPort) int {
	return cmp.Or(
		cmp.Compare(*a.Protocol, *b.Protocol),
		cmp.Compare(a.Port.IntVal, b.Port.IntVal),
		cmp.Compare(ptr.Deref(a.EndPort, 0), ptr.Deref(b.EndPort, 0)),
	)
}

// normalSelector sorts a selector's expressions and values, so selectors that
// mean the same compare equal and serialize identically.
func normalSelector(s *metav1.LabelSelector) metav1.LabelSelector {
	if s == nil {
		return metav1.LabelSelector{}
	}
	out := *s.DeepCopy()
	if len(out.MatchLabels) == 0 {
		out.MatchLabels = nil
	}
	for i := range out.MatchExpressions {
		slices.Sort(out.MatchExpressions[i].Values)
	}
	slices.SortFunc(out.MatchExpressions, func(a, b metav1.LabelSelectorRequirement) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Operator, b.Operator),
			slices.Compare(a.Values, b.Values))
	})
	if len(out.MatchExpressions) == 0 {
		out.MatchExpressions = nil
	}
	return out
}

func selectorKey(s metav1.LabelSelector) string {
	return metav1.FormatLabelSelector(&s) + fmt.Sprint(s.MatchLabels)
}

func object(owner *itmv1.AccessPolicy, ns string, n int, g *group, from []networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       ns,
			Name:            Name(owner.Name, n),
			Labels:          Labels(owner.Name),
			OwnerReferences: []metav1.OwnerReference{OwnerReference(owner)},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *g.selector.DeepCopy(),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if len(from) > 0 {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: slices.Clone(g.ports)}}
	}
	return np
}

// Labels are the labels of every object generated for a policy.
func Labels(policy string) map[string]string {
	return map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue, LabelAccessPolicy: policy}
}

// OwnerReference makes the policy the controller of a generated object, so
// the garbage collector deletes it with the policy.
func OwnerReference(p *itmv1.AccessPolicy) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: itmv1.GroupVersion.String(), Kind: "AccessPolicy",
		Name: p.Name, UID: p.UID, Controller: ptr.To(true),
	}
}

// Isolating is what becomes of a generated NetworkPolicy whose destination
// stopped being valid (it became protected, or the policy's spec turned
// invalid): the same object selecting the same pods with no ingress rule,
// so they stay isolated. Deleting it would open them (fail open); only an
// explicit act (deleting the policy, the destination leaving it, Audit)
// removes it.
func Isolating(owner *itmv1.AccessPolicy, cur *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: cur.Namespace, Name: cur.Name,
			Labels:          Labels(owner.Name),
			OwnerReferences: []metav1.OwnerReference{OwnerReference(owner)},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *cur.Spec.PodSelector.DeepCopy(),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}
