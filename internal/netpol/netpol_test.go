package netpol

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var owner = &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki", UID: "u-1"}}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func web(ports ...itmv1.Port) itmv1.Destination {
	return itmv1.Destination{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Ports: ports}
}

func summary(nps []*networkingv1.NetworkPolicy) []string {
	var out []string
	for _, np := range nps {
		s := np.Namespace + "/" + np.Name + " sel=" + metav1.FormatLabelSelector(&np.Spec.PodSelector)
		for _, r := range np.Spec.Ingress {
			for _, f := range r.From {
				s += " " + f.IPBlock.CIDR
			}
			for _, p := range r.Ports {
				s += " " + string(*p.Protocol) + ":" + p.Port.String()
				if p.EndPort != nil {
					s += "-" + strconv.Itoa(int(*p.EndPort))
				}
			}
		}
		if len(np.Spec.Ingress) == 0 {
			s += " isolated"
		}
		out = append(out, s)
	}
	return out
}

func TestCompile(t *testing.T) {
	tests := map[string]struct {
		in   Input
		want []string
	}{
		"no allowed device isolates, never an empty from": {
			in:   Input{Owner: owner, Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web()}}}},
			want: []string{"a/itm-wiki sel=app=web isolated"},
		},
		"one rule to the ports": {
			in: Input{Owner: owner, Prefixes: prefixes("10.0.0.0/31", "fd00::1/128"),
				Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web(itmv1.Port{Port: 443})}}}},
			want: []string{"a/itm-wiki sel=app=web 10.0.0.0/31 fd00::1/128 TCP:443"},
		},
		"above the CIDR limit, shards by hash; an empty one isolates, never an empty from": {
			in: Input{Owner: owner, MaxCIDRs: 2, Prefixes: prefixes("10.0.0.1/32", "10.0.0.3/32", "10.0.0.5/32", "10.0.0.7/32", "10.0.0.9/32"),
				Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web()}}}},
			want: []string{
				"a/itm-wiki sel=app=web 10.0.0.7/32",
				"a/itm-wiki.1 sel=app=web 10.0.0.3/32 10.0.0.9/32",
				"a/itm-wiki.2 sel=app=web isolated",
				"a/itm-wiki.3 sel=app=web 10.0.0.1/32 10.0.0.5/32",
			},
		},
		"same pods: ports merged, sorted, deduplicated": {
			in: Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32"),
				Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{
					web(itmv1.Port{Port: 443}, itmv1.Port{Port: 53, Protocol: itmv1.ProtocolUDP}),
					web(itmv1.Port{Port: 80, Protocol: itmv1.ProtocolTCP}, itmv1.Port{Port: 443}),
				}}}},
			want: []string{"a/itm-wiki sel=app=web 10.0.0.1/32 TCP:80 TCP:443 UDP:53"},
		},
		"a destination without ports opens every port of those pods": {
			in: Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32"),
				Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web(itmv1.Port{Port: 443}), web()}}}},
			want: []string{"a/itm-wiki sel=app=web 10.0.0.1/32"},
		},
		"different pods get their own objects; namespaces sorted": {
			in: Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32"),
				Targets: []Target{
					{Namespace: "b", Destinations: []itmv1.Destination{web(), {}}},
					{Namespace: "a", Destinations: []itmv1.Destination{{}}},
				}},
			want: []string{
				"a/itm-wiki sel=<none> 10.0.0.1/32",
				"b/itm-wiki sel=<none> 10.0.0.1/32",
				"b/itm-wiki.1 sel=app=web 10.0.0.1/32",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Compile(tc.in)
			if s := summary(got); !slices.Equal(s, tc.want) {
				t.Fatalf("Compile =\n%q\nwant\n%q", s, tc.want)
			}
			for _, np := range got {
				if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
					t.Errorf("%s: policyTypes %v", np.Name, np.Spec.PolicyTypes)
				}
				for _, r := range np.Spec.Ingress {
					if len(r.From) == 0 {
						t.Errorf("%s: empty from allows everyone", np.Name)
					}
				}
				if np.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue || np.Labels[LabelAccessPolicy] != "wiki" {
					t.Errorf("%s: labels %v", np.Name, np.Labels)
				}
				if len(np.OwnerReferences) != 1 || np.OwnerReferences[0].UID != "u-1" || !ptr.Deref(np.OwnerReferences[0].Controller, false) {
					t.Errorf("%s: owner %v", np.Name, np.OwnerReferences)
				}
			}
		})
	}
}

func TestEndPort(t *testing.T) {
	got := Compile(Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32"), Targets: []Target{{Namespace: "a",
		Destinations: []itmv1.Destination{web(itmv1.Port{Port: 8000, EndPort: ptr.To[int32](8080)}, itmv1.Port{Port: 22, EndPort: ptr.To[int32](22)})}}}})
	ports := got[0].Spec.Ingress[0].Ports
	if len(ports) != 2 || ports[0].Port.IntVal != 22 || ports[0].EndPort != nil || ports[1].Port.IntVal != 8000 || *ports[1].EndPort != 8080 {
		t.Fatalf("ports %+v", ports)
	}
}

// TestDeterministic compiles the same meaning given in different orders and
// expects byte-identical objects.
func TestDeterministic(t *testing.T) {
	sel := func(exprs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: exprs}
	}
	r1 := metav1.LabelSelectorRequirement{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "a"}}
	r2 := metav1.LabelSelectorRequirement{Key: "app", Operator: metav1.LabelSelectorOpExists}
	r1b := r1
	r1b.Values = []string{"a", "b"}
	a := Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32", "10.0.0.2/31"), Targets: []Target{
		{Namespace: "x", Destinations: []itmv1.Destination{{PodSelector: sel(r1, r2), Ports: []itmv1.Port{{Port: 2}, {Port: 1}}}, web()}},
		{Namespace: "y", Destinations: []itmv1.Destination{web()}},
	}}
	b := Input{Owner: owner, Prefixes: prefixes("10.0.0.1/32", "10.0.0.2/31"), Targets: []Target{
		{Namespace: "y", Destinations: []itmv1.Destination{web()}},
		{Namespace: "x", Destinations: []itmv1.Destination{web(), {PodSelector: sel(r2, r1b), Ports: []itmv1.Port{{Port: 1}, {Port: 2}}}}},
	}}
	ja, _ := json.Marshal(Compile(a))
	jb, _ := json.Marshal(Compile(b))
	if string(ja) != string(jb) {
		t.Fatalf("same meaning compiled differently:\n%s\n%s", ja, jb)
	}
	again, _ := json.Marshal(Compile(a))
	if string(again) != string(ja) {
		t.Fatal("the same input compiled twice differs")
	}
}

func TestIsolatingKeepsTheSelectionAndDropsEveryRule(t *testing.T) {
	owner := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki", UID: "u-1"}}
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	dest := itmv1.Destination{Namespaces: []string{"shop"}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "wiki"}}}
	cur := Compile(Input{Owner: owner, Targets: []Target{{Namespace: "shop", Destinations: []itmv1.Destination{dest}}}, Prefixes: prefixes})[0]
	cur.Labels["someone"] = "else"
	got := Isolating(owner, cur)
	if got.Namespace != "shop" || got.Name != "itm-wiki" || got.Spec.PodSelector.MatchLabels["app"] != "wiki" {
		t.Fatalf("isolating object %+v", got)
	}
	if len(got.Spec.Ingress) != 0 || len(got.Spec.PolicyTypes) != 1 || got.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Fatalf("an isolating NetworkPolicy has policyTypes [Ingress] and no rule: %+v", got.Spec)
	}
	if len(got.Labels) != 2 || !metav1.IsControlledBy(got, owner) {
		t.Fatalf("labels %v, owners %v", got.Labels, got.OwnerReferences)
	}
}
