package netpol

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Sharding. Above MaxCIDRsPerObject a policy's addresses are spread over
// shards by a hash of each CIDR, not cut in address order: a device coming
// or going then changes the one shard its address hashes to, where cutting
// a sorted list at every 1,000th CIDR shifts every shard after it (one
// address more near the start of 10,000 rewrote all ten objects of 40 KiB).
// The shard count is a power of two, kept from the objects in place while
// it fits: it doubles when a shard would exceed the limit and halves only
// when the halved shards would be three-quarters full at most, so a count
// hovering at a boundary does not reshuffle every object each time; but
// whenever one object holds everything there is one (DESIGN: more shards
// only when needed).

// shards spreads the sorted prefixes over a power-of-two number of shards,
// each sorted and at most limit long, starting from prev shards (0: none in
// place). There is always at least one shard.
func shards(prefixes []netip.Prefix, prev, limit int) [][]netip.Prefix {
	limit = max(limit, 1)
	if len(prefixes) == 0 {
		return [][]netip.Prefix{nil}
	}
	hashes := make([]uint64, len(prefixes))
	for i, p := range prefixes {
		hashes[i] = prefixHash(p)
	}
	fits := func(b int) bool {
		counts := make([]int, b)
		for _, h := range hashes {
			k := bucket(h, b)
			counts[k]++
			if counts[k] > limit {
				return false
			}
		}
		return true
	}
	b := 1
	if prev > 1 && prev&(prev-1) == 0 {
		b = prev
	}
	// One object whenever one holds everything (DESIGN: shards only when
	// needed); above that, halving waits for three-quarters.
	for b > 1 && fits(b/2) && (b == 2 || 4*len(prefixes) <= 3*limit*(b/2)) {
		b /= 2
	}
	// Doubling spreads random addresses within a step or two; addresses
	// chosen to collide could keep a shard full whatever the count: past a
	// bound, cut in address order instead, which always fits.
	bound := 64 * max(1, (len(prefixes)+limit-1)/limit)
	for !fits(b) {
		if b >= bound {
			return slices.Collect(slices.Chunk(prefixes, limit))
		}
		b *= 2
	}
	out := make([][]netip.Prefix, b)
	for i, p := range prefixes {
		k := bucket(hashes[i], b)
		out[k] = append(out[k], p) // in order: each shard is sorted
	}
	return out
}

// bucket is the shard of hash h among b, a power of two: its low bits.
func bucket(h uint64, b int) int {
	return int(h & uint64(b-1)) //nolint:gosec // b is a positive power of two, so the mask and the result are below it
}

// prefixHash is a stable hash of a CIDR (the same in every replica and
// release: a different one would move every address once).
func prefixHash(p netip.Prefix) uint64 {
	h := fnv.New64a()
	a := p.Addr().As16()
	_, _ = h.Write(a[:])
	_, _ = h.Write(strconv.AppendInt(nil, int64(p.Bits()), 10))
	// FNV's low bits alone are poorly mixed; a shard is picked by them.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// shardsInPlace is how many shards the owner's objects in place have: in
// the first target namespace holding any, the objects it controls that
// select the pods of that namespace's first pod group, when that is a power
// of two; 0 otherwise (nothing in place, or a layout this release did not
// write).
func shardsInPlace(owner metav1.Object, existing []*networkingv1.NetworkPolicy, targets []Target) int {
	for _, t := range targets {
		groups := groupBySelector(t.Destinations)
		if len(groups) == 0 {
			continue
		}
		n := 0
		for _, np := range existing {
			if np.Namespace == t.Namespace && metav1.IsControlledBy(np, owner) && equality.Semantic.DeepEqual(np.Spec.PodSelector, groups[0].selector) {
				n++
			}
		}
		if n > 0 {
			if n&(n-1) != 0 {
				return 0
			}
			return n
		}
	}
	return 0
}
