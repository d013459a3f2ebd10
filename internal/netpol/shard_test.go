package netpol

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// scattered are n distinct /32s spread over 10.0.0.0/8, sorted (no two
// adjacent, so none aggregate).
func scattered(n int, seed uint64) []netip.Prefix {
	rng := rand.New(rand.NewPCG(seed, 1))
	seen := map[netip.Prefix]bool{}
	for len(seen) < n {
		v := 10<<24 | rng.Uint32N(1<<23)<<1
		seen[netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)] = true
	}
	out := make([]netip.Prefix, 0, n)
	for p := range seen {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func compileIn(ps []netip.Prefix, existing []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	return Compile(Input{Owner: owner, Prefixes: ps, Existing: existing,
		Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web()}}}})
}

// cidrsOf is every CIDR of the objects, in order, and fails on an object
// over the limit or unsorted.
func cidrsOf(t *testing.T, nps []*networkingv1.NetworkPolicy) []string {
	t.Helper()
	var all []string
	for i, np := range nps {
		if want := Name("wiki", i); np.Name != want {
			t.Fatalf("object %d is named %s, want %s", i, np.Name, want)
		}
		var cidrs []netip.Prefix
		for _, r := range np.Spec.Ingress {
			if len(r.From) == 0 {
				t.Fatalf("%s: an empty from allows everyone", np.Name)
			}
			for _, f := range r.From {
				cidrs = append(cidrs, netip.MustParsePrefix(f.IPBlock.CIDR))
				all = append(all, f.IPBlock.CIDR)
			}
		}
		if len(cidrs) > MaxCIDRsPerObject {
			t.Fatalf("%s holds %d CIDRs, more than %d", np.Name, len(cidrs), MaxCIDRsPerObject)
		}
		if !slices.IsSortedFunc(cidrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }) {
			t.Fatalf("%s: CIDRs not sorted", np.Name)
		}
	}
	return all
}

func changedObjects(before, after []*networkingv1.NetworkPolicy) int {
	n := max(len(before), len(after)) - min(len(before), len(after))
	for i := range min(len(before), len(after)) {
		if before[i].Name != after[i].Name || !equality.Semantic.DeepEqual(before[i].Spec, after[i].Spec) {
			n++
		}
	}
	return n
}

func TestShardsHoldEveryCIDRWithinTheLimit(t *testing.T) {
	for _, n := range []int{1, 999, 1000, 1001, 10000, 100000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			ps := scattered(n, uint64(n))
			nps := compileIn(ps, nil)
			got := cidrsOf(t, nps)
			slices.Sort(got)
			want := make([]string, len(ps))
			for i, p := range ps {
				want[i] = p.String()
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("the shards hold %d CIDRs, want each of the %d exactly once", len(got), len(want))
			}
			if n <= MaxCIDRsPerObject && len(nps) != 1 {
				t.Fatalf("%d CIDRs in %d objects, want 1 (shards only when needed)", n, len(nps))
			}
			if n > MaxCIDRsPerObject && len(nps) > 4*n/MaxCIDRsPerObject {
				t.Fatalf("%d CIDRs in %d objects: far more than needed", n, len(nps))
			}
		})
	}
}

// TestADeviceComingOrGoingChangesOneShard is what sharding by hash is for: in
// address order, one CIDR more near the start shifted every object after it.
func TestADeviceComingOrGoingChangesOneShard(t *testing.T) {
	ps := scattered(10001, 7)
	base, extra := slices.Clone(ps[:10000]), ps[10000]
	before := compileIn(base, nil)
	if len(before) < 2 {
		t.Fatalf("10,000 CIDRs in %d object(s); the test needs shards", len(before))
	}
	// The lowest address comes: in address order every object would change.
	grown := append([]netip.Prefix{netip.MustParsePrefix("9.255.255.255/32")}, base...)
	after := compileIn(grown, before)
	if c := changedObjects(before, after); c != 1 {
		t.Fatalf("one CIDR more changed %d of %d objects, want 1", c, len(before))
	}
	// One goes.
	after = compileIn(base[1:], before)
	if c := changedObjects(before, after); c != 1 {
		t.Fatalf("one CIDR less changed %d of %d objects, want 1", c, len(before))
	}
	// Without the objects in place the count is chosen afresh: the same.
	if got := compileIn(append(slices.Clone(base), extra), nil); len(got) != len(before) {
		t.Fatalf("afresh: %d objects, in place %d", len(got), len(before))
	}
}

func TestTheShardCountChangesOnlyWhenItMust(t *testing.T) {
	ps := scattered(2600, 3)
	two, four := compileIn(ps[:1001], nil), compileIn(ps[:2100], nil)
	if len(two) != 2 || len(four) != 4 {
		t.Fatalf("1,001 CIDRs in %d objects, 2,100 in %d; want 2 and 4", len(two), len(four))
	}
	for _, tc := range []struct {
		name     string
		cidrs    int
		in       []*networkingv1.NetworkPolicy
		wantObjs int
	}{
		{"two become one as soon as one holds everything (DESIGN: shards only when needed)", 1000, two, 1},
		{"one stays one up to the limit", 1000, compileIn(ps[:900], nil), 1},
		{"one becomes two above it", 1001, compileIn(ps[:900], nil), 2},
		{"four stay four down to three-quarters of two", 1501, four, 4},
		{"four halve to two at three-quarters", 1500, four, 2},
		{"two stay two while no shard overflows", 1900, two, 2},
		{"two become four when one would", 2100, two, 4},
		{"from scratch, the fewest that fit", 1500, nil, 2},
		{"a count this release did not write is chosen afresh", 1500, append(slices.Clone(four), four[0]), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := compileIn(ps[:tc.cidrs], tc.in); len(got) != tc.wantObjs {
				t.Fatalf("%d CIDRs with %d objects in place: %d objects, want %d", tc.cidrs, len(tc.in), len(got), tc.wantObjs)
			}
		})
	}
}

// Each pod group of a namespace gets every shard, named group×shards+shard;
// the count in place is read over the groups.
func TestShardsPerPodGroup(t *testing.T) {
	ps := scattered(2500, 5)
	in := Input{Owner: owner, Prefixes: ps, Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web(), {}}}}}
	first := Compile(in)
	if len(first) != 8 {
		t.Fatalf("2 pod groups × 4 shards: %d objects", len(first))
	}
	for k := range 4 {
		if !equality.Semantic.DeepEqual(first[k].Spec.Ingress[0].From, first[4+k].Spec.Ingress[0].From) {
			t.Fatalf("the pod groups do not get the same shard %d", k)
		}
	}
	in.Existing, in.Prefixes = first, ps[:1600]
	if got := Compile(in); len(got) != 8 {
		t.Fatalf("1,600 CIDRs with 4 shards per group in place: %d objects, want 8 (kept)", len(got))
	}
	// A pod group added: the count is still read off the first group.
	in.Targets[0].Destinations = append(in.Targets[0].Destinations, itmv1.Destination{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}})
	if got := Compile(in); len(got) != 12 {
		t.Fatalf("1,600 CIDRs, 3 pod groups, 4 shards per group in place: %d objects, want 12", len(got))
	}
}

// Whatever the addresses, every shard fits: when hashing cannot spread them
// (here: one CIDR per object, which random hashes never manage for 200),
// they are cut in address order.
func TestShardsAlwaysFit(t *testing.T) {
	ps := scattered(200, 9)
	got := Compile(Input{Owner: owner, Prefixes: ps, MaxCIDRs: 1, Targets: []Target{{Namespace: "a", Destinations: []itmv1.Destination{web()}}}})
	if len(got) != 200 {
		t.Fatalf("200 CIDRs at 1 per object: %d objects", len(got))
	}
	for i, np := range got {
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].IPBlock.CIDR != ps[i].String() {
			t.Fatalf("object %d: %+v, want exactly %s", i, np.Spec.Ingress, ps[i])
		}
	}
}
