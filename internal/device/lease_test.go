package device

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestLeaseKey(t *testing.T) {
	agent := laptop(nil)
	noAgent := laptop(func(d *itmv1.Device) { d.Spec.Agent = nil })
	disabled := laptop(func(d *itmv1.Device) { d.Spec.Agent.Enabled = false })
	named := nodeDevice("n1", "1", func(d *itmv1.Device) { d.OwnerReferences = nil })
	cases := []struct {
		name string
		d    *itmv1.Device
		want types.NamespacedName
		ok   bool
	}{
		{"agent: its own Lease in the devices namespace", agent, types.NamespacedName{Namespace: "devs", Name: "lt-1"}, true},
		{"no agent: none", noAgent, types.NamespacedName{}, false},
		{"agent disabled: none", disabled, types.NamespacedName{}, false},
		{"discovered Node device: its Node's Lease", nodeDevice("n1", "1", nil), types.NamespacedName{Namespace: NodeLeaseNamespace, Name: "n1"}, true},
		{"a Device that merely names a Node borrows nothing", named, types.NamespacedName{Namespace: NodeLeaseNamespace, Name: "n1"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, ok := LeaseKey("devs", c.d)
			if ok != c.ok || (ok && key != c.want) {
				t.Fatalf("LeaseKey = %v, %v; want %v, %v", key, ok, c.want, c.ok)
			}
		})
	}
}

func TestClaims(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*itmv1.Device)
		want   []string
	}{
		{"none", nil, nil},
		{"static and observed, canonical, deduplicated, sorted", func(d *itmv1.Device) {
			d.Spec.Addresses = []string{"FD00:0::1", "10.0.0.2"}
			d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"fd00::1", "::ffff:10.0.0.1"}}
		}, []string{"10.0.0.1", "10.0.0.2", "fd00::1"}},
		{"an address outside any range still claims", func(d *itmv1.Device) { d.Spec.Addresses = []string{"192.0.2.1"} }, []string{"192.0.2.1"}},
		{"a string that is no address is kept as it is", func(d *itmv1.Device) {
			d.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"not-an-ip", "10.0.0.1"}}
		}, []string{"10.0.0.1", "not-an-ip"}},
		{"retired claims nothing", func(d *itmv1.Device) {
			d.Spec.Lifecycle, d.Spec.Addresses = itmv1.DeviceLifecycleRetired, []string{"10.0.0.1"}
		}, nil},
		{"lost claims nothing", func(d *itmv1.Device) {
			d.Spec.Lifecycle, d.Spec.Addresses = itmv1.DeviceLifecycleLost, []string{"10.0.0.1"}
		}, nil},
		{"unset lifecycle is Active", func(d *itmv1.Device) { d.Spec.Lifecycle, d.Spec.Addresses = "", []string{"10.0.0.1"} }, []string{"10.0.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Claims(laptop(c.mutate)); !slices.Equal(got, c.want) {
				t.Fatalf("Claims = %q, want %q", got, c.want)
			}
		})
	}
}
