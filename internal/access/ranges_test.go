package access

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// --agent-address-cidrs reach access decisions for static and reported
// addresses alike (the rule itself is device.Addresses, tested there).
func TestEvaluateAddressRanges(t *testing.T) {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	fresh := now.Add(-time.Minute)
	reported := func(addrs ...string) *itmv1.Device {
		d := dev("d-agent", "alice")
		d.Status.Observed = &itmv1.ObservedFacts{Addresses: addrs}
		return d
	}
	tests := map[string]struct {
		device      *itmv1.Device
		ranges      []netip.Prefix
		wantAllowed bool
		wantAddrs   []string
		wantReasons string
	}{
		"a static address outside the ranges is not allowed": {
			device: dev("d-static", "alice", "192.0.2.1"), ranges: ranges,
			wantReasons: "address 192.0.2.1 is outside the allowed ranges; no usable address",
		},
		"only the static addresses inside the ranges are allowed": {
			device: dev("d-static", "alice", "192.0.2.1", "10.0.0.1"), ranges: ranges,
			wantAllowed: true, wantAddrs: []string{"10.0.0.1"},
		},
		"a reported address outside the ranges is not allowed": {
			device: reported("198.51.100.4"), ranges: ranges,
			wantReasons: "address 198.51.100.4 is outside the allowed ranges; no usable address",
		},
		"without ranges every address counts": {
			device:      dev("d-static", "alice", "192.0.2.1"),
			wantAllowed: true, wantAddrs: []string{"192.0.2.1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := Evaluate(Candidate{Device: tc.device, LastCheckIn: &fresh, AddressRanges: tc.ranges}, nil, now)
			var addrs []string
			for _, a := range v.Addresses {
				addrs = append(addrs, a.String())
			}
			if v.Allowed != tc.wantAllowed || !slices.Equal(addrs, tc.wantAddrs) || strings.Join(v.Reasons, "; ") != tc.wantReasons {
				t.Errorf("Evaluate = allowed %v %v (%q), want %v %v (%q)", v.Allowed, addrs, v.Reasons, tc.wantAllowed, tc.wantAddrs, tc.wantReasons)
			}
		})
	}
}
