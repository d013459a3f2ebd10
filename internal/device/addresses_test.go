package device

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s))
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestInRanges(t *testing.T) {
	ranges := prefixes("10.0.0.0/8", "fd00::/8")
	tests := map[string]struct {
		ip     string
		ranges []netip.Prefix
		want   bool
	}{
		"no ranges: any address counts":           {ip: "192.0.2.1", want: true},
		"inside an IPv4 range":                    {ip: "10.1.2.3", ranges: ranges, want: true},
		"outside every range":                     {ip: "192.168.1.20", ranges: ranges, want: false},
		"inside an IPv6 range":                    {ip: "fd00::7", ranges: ranges, want: true},
		"IPv6 outside":                            {ip: "2001:db8::1", ranges: ranges, want: false},
		"IPv4-mapped IPv6 judged as its IPv4":     {ip: "::ffff:10.0.0.1", ranges: ranges, want: true},
		"IPv4-mapped IPv6 outside stays outside":  {ip: "::ffff:192.0.2.1", ranges: ranges, want: false},
		"range boundary, last address is inside":  {ip: "10.255.255.255", ranges: ranges, want: true},
		"range boundary, next address is outside": {ip: "11.0.0.0", ranges: ranges, want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := InRanges(netip.MustParseAddr(tc.ip), tc.ranges); got != tc.want {
				t.Errorf("InRanges(%s, %v) = %v, want %v", tc.ip, tc.ranges, got, tc.want)
			}
		})
	}
}

func nodeDevice(node, uid string, mutate func(*itmv1.Device)) *itmv1.Device {
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: "node-" + node, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: node, UID: types.UID("uid-" + uid), Controller: ptr.To(true),
		}}},
		Spec:   itmv1.DeviceSpec{Class: itmv1.DeviceClassNode, NodeName: node},
		Status: itmv1.DeviceStatus{Observed: &itmv1.ObservedFacts{Addresses: []string{"192.0.2.10"}}},
	}
	if mutate != nil {
		mutate(d)
	}
	return d
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":             "10.0.0.1",
		"FD00:0:0::1":          "fd00::1",
		"fd00:0000::0001":      "fd00::1",
		"::ffff:10.0.0.1":      "10.0.0.1",
		"::FFFF:a00:1":         "10.0.0.1",
		"fe80::1%eth0":         "fe80::1",
		"not an address":       "not an address",
		"10.0.0.0/24":          "10.0.0.0/24",
		"2001:DB8::ABCD:0:0:1": "2001:db8::abcd:0:0:1",
	} {
		if got := Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddresses(t *testing.T) {
	ranges := prefixes("10.0.0.0/8", "fd00::/8")
	tests := map[string]struct {
		device      *itmv1.Device
		ranges      []netip.Prefix
		wantUsable  []string
		wantOutside []string
	}{
		"no ranges: static and reported all count": {
			device: laptop(func(d *itmv1.Device) {
				d.Spec.Addresses = []string{"192.0.2.1", "10.0.0.1"}
				d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"10.0.0.1", "198.51.100.1"}}
			}),
			wantUsable: []string{"10.0.0.1", "192.0.2.1", "198.51.100.1"},
		},
		"a static address outside the ranges does not count": {
			device:      laptop(func(d *itmv1.Device) { d.Spec.Addresses = []string{"192.0.2.1", "10.0.0.1"} }),
			ranges:      ranges,
			wantUsable:  []string{"10.0.0.1"},
			wantOutside: []string{"192.0.2.1"},
		},
		"a reported address outside the ranges does not count either": {
			device: laptop(func(d *itmv1.Device) {
				d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"fd00::7", "2001:db8::7"}}
			}),
			ranges:      ranges,
			wantUsable:  []string{"fd00::7"},
			wantOutside: []string{"2001:db8::7"},
		},
		"static and reported alike are judged once": {
			device: laptop(func(d *itmv1.Device) {
				d.Spec.Addresses = []string{"192.0.2.1"}
				d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"192.0.2.1"}}
			}),
			ranges:      ranges,
			wantOutside: []string{"192.0.2.1"},
		},
		"two spellings of one address are one address, in its canonical form": {
			device: laptop(func(d *itmv1.Device) {
				d.Spec.Addresses = []string{"FD00:0::7", "::ffff:10.0.0.1", "192.0.2.1"}
				d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"fd00::7", "10.0.0.1"}}
			}),
			ranges:      ranges,
			wantUsable:  []string{"10.0.0.1", "fd00::7"},
			wantOutside: []string{"192.0.2.1"},
		},
		"a discovered Node's own addresses come from the Node and count": {
			device:     nodeDevice("worker-1", "a", nil),
			ranges:     ranges,
			wantUsable: []string{"192.0.2.10"},
		},
		"a discovered Node's static addresses are judged like any other": {
			device:      nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.Spec.Addresses = []string{"198.51.100.9"} }),
			ranges:      ranges,
			wantUsable:  []string{"192.0.2.10"},
			wantOutside: []string{"198.51.100.9"},
		},
		"a Node-class Device without discovery's mark gets no exemption": {
			device:      nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.OwnerReferences = nil }),
			ranges:      ranges,
			wantOutside: []string{"192.0.2.10"},
		},
		"a mark for another Node than spec.nodeName gets no exemption": {
			device:      nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.Spec.NodeName = "worker-2" }),
			ranges:      ranges,
			wantOutside: []string{"192.0.2.10"},
		},
		"a laptop owned by a Node gets no exemption": {
			device: nodeDevice("worker-1", "a", func(d *itmv1.Device) {
				d.Spec.Class, d.Spec.NodeName = itmv1.DeviceClassLaptop, ""
			}),
			ranges:      ranges,
			wantOutside: []string{"192.0.2.10"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			usable, outside := Addresses(tc.device, tc.ranges)
			if !slices.Equal(usable, tc.wantUsable) || !slices.Equal(outside, tc.wantOutside) {
				t.Errorf("Addresses = %v, %v; want %v, %v", usable, outside, tc.wantUsable, tc.wantOutside)
			}
		})
	}
}

func TestOwnedByNode(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", UID: "uid-a"}}
	tests := map[string]struct {
		device *itmv1.Device
		want   bool
	}{
		"the Device discovery made for this Node":   {device: nodeDevice("worker-1", "a", nil), want: true},
		"made for an earlier Node of the same name": {device: nodeDevice("worker-1", "b", nil), want: false},
		"no owner reference (made by hand)": {
			device: nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.OwnerReferences = nil }), want: false,
		},
		"an owner reference that is not the controller": {
			device: nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.OwnerReferences[0].Controller = nil }), want: false,
		},
		"a controller that is not a Node": {
			device: nodeDevice("worker-1", "a", func(d *itmv1.Device) { d.OwnerReferences[0].Kind = "Machine" }), want: false,
		},
		"owned by another Node": {
			device: nodeDevice("worker-2", "a", nil), want: false,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := OwnedByNode(tc.device, node); got != tc.want {
				t.Errorf("OwnedByNode = %v, want %v", got, tc.want)
			}
		})
	}
}
