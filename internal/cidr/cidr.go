// Package cidr aggregates addresses into the fewest CIDR prefixes that cover
// exactly those addresses: no address outside the set is ever covered, since
// a NetworkPolicy ipBlock grants access to its whole range.
package cidr

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// Aggregate returns the minimal set of prefixes whose union is exactly the
// given addresses, canonical (masked) and sorted: IPv4 before IPv6, then by
// address. Invalid addresses are ignored; IPv4-mapped IPv6 addresses count as
// IPv4 (that is how a NetworkPolicy implementation sees them).
func Aggregate(addrs []netip.Addr) []netip.Prefix {
	clean := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			clean = append(clean, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(clean, func(a, b netip.Addr) int { return a.Compare(b) })
	clean = slices.Compact(clean)

	var out []netip.Prefix
	for i := 0; i < len(clean); {
		// Extend a run of consecutive addresses of one family.
		j := i
		for j+1 < len(clean) && clean[j+1].BitLen() == clean[i].BitLen() && clean[j].Next() == clean[j+1] {
			j++
		}
		out = appendRange(out, clean[i], clean[j])
		i = j + 1
	}
	return out
}

// appendRange appends the minimal prefixes covering [first, last]. Within a
// maximal run, the greedy largest-aligned-block split is minimal, and runs
// are separated by holes no prefix may cover, so the whole result is minimal.
func appendRange(out []netip.Prefix, first, last netip.Addr) []netip.Prefix {
	bitLen := first.BitLen()
	lo, hi := toU128(first), toU128(last)
	for {
		// The largest block starting at lo is limited by lo's alignment and
		// by the number of addresses left.
		size := min(lo.trailingZeros(bitLen), hi.sub(lo).bitLenPlusOne())
		out = append(out, netip.PrefixFrom(fromU128(lo, bitLen), bitLen-size))
		end := lo.add(ones(size))
		if end.cmp(hi) >= 0 {
			return out
		}
		lo = end.add(u128{lo: 1})
	}
}

// u128 is an unsigned 128-bit integer, enough for an IPv6 address.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var v u128
	for i := range 8 {
		v.hi = v.hi<<8 | uint64(b[i])
		v.lo = v.lo<<8 | uint64(b[8+i])
	}
	return v
}

func fromU128(v u128, bitLen int) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	if bitLen == 32 {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

func (v u128) cmp(w u128) int {
	switch {
	case v.hi != w.hi:
		return cmpU64(v.hi, w.hi)
	default:
		return cmpU64(v.lo, w.lo)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (v u128) add(w u128) u128 {
	lo, carry := bits.Add64(v.lo, w.lo, 0)
	hi, _ := bits.Add64(v.hi, w.hi, carry)
	return u128{hi, lo}
}

func (v u128) sub(w u128) u128 {
	lo, borrow := bits.Sub64(v.lo, w.lo, 0)
	hi, _ := bits.Sub64(v.hi, w.hi, borrow)
	return u128{hi, lo}
}

// ones is 2^n - 1 (n <= 128): the offset of a block's last address.
func ones(n int) u128 {
	switch {
	case n >= 128:
		return u128{hi: ^uint64(0), lo: ^uint64(0)}
	case n >= 64:
		return u128{hi: 1<<(n-64) - 1, lo: ^uint64(0)}
	default:
		return u128{lo: 1<<n - 1}
	}
}

// trailingZeros is the number of trailing zero bits, at most bitLen.
func (v u128) trailingZeros(bitLen int) int {
	if v.lo != 0 {
		return bits.TrailingZeros64(v.lo)
	}
	if v.hi != 0 {
		return 64 + bits.TrailingZeros64(v.hi)
	}
	return bitLen
}

// bitLenPlusOne is the largest k with 2^k <= v+1: the size exponent of the
// largest block that fits in a remaining span of v+1 addresses.
func (v u128) bitLenPlusOne() int {
	n := v.add(u128{lo: 1})
	if n.hi == 0 && n.lo == 0 { // v+1 overflowed: the span is 2^128.
		return 128
	}
	if n.hi != 0 {
		return 63 + bits.Len64(n.hi)
	}
	return bits.Len64(n.lo) - 1
}
