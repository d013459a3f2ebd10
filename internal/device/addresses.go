package device

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// ParseRanges parses a comma-separated list of CIDRs (the flag
// --agent-address-cidrs of the manager and the check-in service); empty
// entries are skipped, so "" means any address.
func ParseRanges(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// InRanges is the one rule for a device's addresses (the manager's
// --agent-address-cidrs): an address counts only inside one of ranges, or
// anywhere when ranges is empty. An IPv4-mapped IPv6 address is judged as
// the IPv4 address it carries, so "::ffff:192.0.2.1" cannot slip past an
// IPv4 range.
func InRanges(ip netip.Addr, ranges []netip.Prefix) bool {
	if len(ranges) == 0 {
		return true
	}
	ip = ip.Unmap()
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Canonical is the one spelling of an IP address: what netip prints for it,
// an IPv4-mapped IPv6 address as the IPv4 address it carries, without a
// zone (as internal/cidr compiles it into a NetworkPolicy). The schema
// accepts any spelling of spec.addresses ("FD00:0::1", "fd00::1"), so every
// comparison of addresses (conflicts between Devices, deduplication) is of
// canonical forms; otherwise two spellings of one address would be two
// claims, and both Devices would be allowed from it. A string that is not an
// IP address is returned as it is.
func Canonical(s string) string {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return ip.Unmap().WithZone("").String()
}

// Addresses are the addresses Device d claims, split by InRanges: usable
// are those that count, outside those that do not. The rule covers both its
// static spec.addresses and the addresses in status.observed, because either
// can be written by someone other than the manager (a user, the check-in
// service on a device's word). The one exception: the observed addresses of
// a Device that Node discovery made for its Node come from the
// Node object, not from a device, and all count (MirrorsNode). Both lists are
// Canonical, deduplicated and sorted; a string that is not an IP address is
// outside.
func Addresses(d *itmv1.Device, ranges []netip.Prefix) (usable, outside []string) {
	judge := func(addrs []string, exempt bool) {
		for _, s := range addrs {
			s = Canonical(s)
			ip, err := netip.ParseAddr(s)
			if err == nil && (exempt || InRanges(ip, ranges)) {
				usable = append(usable, s)
			} else {
				outside = append(outside, s)
			}
		}
	}
	judge(d.Spec.Addresses, false)
	if d.Status.Observed != nil {
		judge(d.Status.Observed.Addresses, MirrorsNode(d))
	}
	slices.Sort(usable)
	usable = slices.Compact(usable)
	slices.Sort(outside)
	outside = slices.Compact(outside)
	// The same string cannot be both: static and observed are judged alike
	// except for a Node's own addresses, which win.
	outside = slices.DeleteFunc(outside, func(s string) bool { _, found := slices.BinarySearch(usable, s); return found })
	return usable, outside
}

// Claims are the addresses an Active Device claims against every other
// Device (the address index, conflicts between Devices): all it has,
// static and observed, whether or not they count inside the address
// ranges, in Addresses' canonical, deduplicated, sorted form. A Retired or
// Lost device claims none (it never gets access).
func Claims(d *itmv1.Device) []string {
	if !Active(d) {
		return nil
	}
	usable, outside := Addresses(d, nil)
	if len(outside) == 0 {
		return usable
	}
	out := append(slices.Clone(usable), outside...)
	slices.Sort(out)
	return out
}

// NodeOwner is the ownership mark Node discovery puts on the Device it makes
// for a Node (DESIGN §2): a controller owner reference to a Node, carrying
// that Node's name and UID. nil for any other Device, however it is named.
func NodeOwner(d *itmv1.Device) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(d)
	if ref == nil || ref.APIVersion != "v1" || ref.Kind != "Node" {
		return nil
	}
	return ref
}

// OwnedByNode reports whether d is the Device Node discovery made for node:
// its ownership mark names node by name and UID, so a Device made for an
// earlier Node of the same name is not this one's.
func OwnedByNode(d *itmv1.Device, node *corev1.Node) bool {
	ref := NodeOwner(d)
	return ref != nil && node != nil && ref.Name == node.Name && node.UID != "" && ref.UID == node.UID
}

// MirrorsNode reports whether d is a discovered Node device: class Node, with
// the ownership mark of the Node its spec.nodeName names. Only such a Device
// takes the Node's facts and check-ins; one that merely names a Node does
// not. (Where the Node is at hand, OwnedByNode also compares its UID.)
func MirrorsNode(d *itmv1.Device) bool {
	ref := NodeOwner(d)
	return d.Spec.Class == itmv1.DeviceClassNode && ref != nil && ref.Name == d.Spec.NodeName
}
