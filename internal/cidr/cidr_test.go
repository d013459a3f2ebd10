package cidr

import (
	"encoding/binary"
	"math/big"
	"net/netip"
	"slices"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func rangeOf(first string, n int) []netip.Addr {
	a := netip.MustParseAddr(first)
	out := make([]netip.Addr, 0, n)
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

func TestAggregate(t *testing.T) {
	tests := map[string]struct {
		in   []netip.Addr
		want []string
	}{
		"empty":                   {nil, nil},
		"one IPv4":                {addrs("10.0.0.1"), []string{"10.0.0.1/32"}},
		"duplicates collapse":     {addrs("10.0.0.1", "10.0.0.1"), []string{"10.0.0.1/32"}},
		"aligned pair":            {addrs("10.0.0.1", "10.0.0.0"), []string{"10.0.0.0/31"}},
		"unaligned pair":          {addrs("10.0.0.1", "10.0.0.2"), []string{"10.0.0.1/32", "10.0.0.2/32"}},
		"full /24":                {rangeOf("192.168.1.0", 256), []string{"192.168.1.0/24"}},
		"/24 minus first":         {rangeOf("192.168.1.1", 255), []string{"192.168.1.1/32", "192.168.1.2/31", "192.168.1.4/30", "192.168.1.8/29", "192.168.1.16/28", "192.168.1.32/27", "192.168.1.64/26", "192.168.1.128/25"}},
		"across an octet":         {rangeOf("10.0.0.254", 4), []string{"10.0.0.254/31", "10.0.1.0/31"}},
		"top of IPv4":             {rangeOf("255.255.255.254", 2), []string{"255.255.255.254/31"}},
		"IPv4-mapped is IPv4":     {addrs("::ffff:10.0.0.1", "10.0.0.0"), []string{"10.0.0.0/31"}},
		"families never merge":    {addrs("255.255.255.255", "::"), []string{"255.255.255.255/32", "::/128"}},
		"IPv6 pair":               {addrs("2001:db8::1", "2001:db8::"), []string{"2001:db8::/127"}},
		"IPv6 across 64-bit edge": {rangeOf("2001:db8:0:0:ffff:ffff:ffff:fffe", 4), []string{"2001:db8::ffff:ffff:ffff:fffe/127", "2001:db8:0:1::/127"}},
		"sorted v4 then v6":       {addrs("fd00::1", "10.0.0.9", "10.0.0.1"), []string{"10.0.0.1/32", "10.0.0.9/32", "fd00::1/128"}},
		"invalid ignored":         {[]netip.Addr{{}, netip.MustParseAddr("10.0.0.1")}, []string{"10.0.0.1/32"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := prefixStrings(Aggregate(tc.in))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Aggregate = %v, want %v", got, tc.want)
			}
			checkExact(t, tc.in, Aggregate(tc.in))
		})
	}
}

func TestAggregateLargeRanges(t *testing.T) {
	// 100,000 contiguous addresses starting on a /16 need few prefixes.
	got := Aggregate(rangeOf("10.0.0.0", 100_000))
	// 100,000 = 65,536 + 32,768 + 1,024 + 512 + 128 + 32
	want := []string{"10.0.0.0/16", "10.1.0.0/17", "10.1.128.0/22", "10.1.132.0/23", "10.1.134.0/25", "10.1.134.128/27"}
	if s := prefixStrings(got); !slices.Equal(s, want) {
		t.Fatalf("100,000 contiguous addresses gave %v, want %v", s, want)
	}
	// Whole IPv6 space edge: the last two addresses.
	got = Aggregate(addrs("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
	if len(got) != 1 || got[0].String() != "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127" {
		t.Fatalf("got %v", got)
	}
}

// checkExact asserts that the prefixes are canonical, sorted, disjoint, cover
// every input address, cover nothing else (their sizes add up to the number
// of distinct inputs) and are maximal (no prefix's sibling is also fully
// covered, which would let the two merge).
func checkExact(t *testing.T, in []netip.Addr, out []netip.Prefix) {
	t.Helper()
	distinct := map[netip.Addr]bool{}
	for _, a := range in {
		if a.IsValid() {
			distinct[a.Unmap()] = true
		}
	}
	total := new(big.Int)
	for i, p := range out {
		if p != p.Masked() {
			t.Fatalf("prefix %v is not canonical", p)
		}
		if i > 0 {
			prev := out[i-1]
			if prev.Addr().BitLen() == p.Addr().BitLen() && (prev.Overlaps(p) || prev.Addr().Compare(p.Addr()) >= 0) {
				t.Fatalf("prefixes %v and %v overlap or are out of order", prev, p)
			}
			if prev.Addr().Is6() && p.Addr().Is4() {
				t.Fatalf("IPv6 %v sorted before IPv4 %v", prev, p)
			}
		}
		total.Add(total, new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits())))
	}
	for a := range distinct {
		if !slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Contains(a) }) {
			t.Fatalf("address %v is not covered by %v", a, out)
		}
	}
	if total.Cmp(big.NewInt(int64(len(distinct)))) != 0 {
		t.Fatalf("prefixes cover %v addresses, want exactly %d", total, len(distinct))
	}
	for _, p := range out {
		if p.Bits() == 0 {
			continue
		}
		parent := netip.PrefixFrom(p.Addr(), p.Bits()-1).Masked()
		covered := new(big.Int)
		for _, q := range out {
			if q.Addr().BitLen() == p.Addr().BitLen() && parent.Contains(q.Addr()) && q.Bits() >= parent.Bits() {
				covered.Add(covered, new(big.Int).Lsh(big.NewInt(1), uint(q.Addr().BitLen()-q.Bits())))
			}
		}
		if covered.Cmp(new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-parent.Bits()))) == 0 {
			t.Fatalf("%v could merge into %v: not minimal (%v)", p, parent, out)
		}
	}
}

// FuzzAggregate builds addresses from the fuzzer's bytes, clustered so that
// runs, holes and alignment edges are common, and checks the cover is exact
// and minimal.
func FuzzAggregate(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7}, false)
	f.Add([]byte{255, 255, 0, 0, 1}, true)
	f.Add([]byte{8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 200}, false)
	f.Fuzz(func(t *testing.T, data []byte, v6 bool) {
		if len(data) > 512 {
			data = data[:512]
		}
		var in []netip.Addr
		for i := 0; i+1 < len(data); i += 2 {
			off := binary.BigEndian.Uint16(data[i:])
			if v6 {
				// Straddle the 64-bit boundary of the address.
				var b [16]byte
				binary.BigEndian.PutUint64(b[:8], 0x20010db800000000|uint64(off>>15))
				binary.BigEndian.PutUint64(b[8:], 0xffffffffffffff00|uint64(off&0xff))
				in = append(in, netip.AddrFrom16(b))
			} else {
				in = append(in, netip.AddrFrom4([4]byte{10, 0, byte(off >> 8 & 0x3), byte(off)}))
			}
		}
		checkExact(t, in, Aggregate(in))
	})
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
