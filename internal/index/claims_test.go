package index

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestClaimants(t *testing.T) {
	dev := func(name string, lc itmv1.DeviceLifecycle, addrs ...string) *itmv1.Device {
		return &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.DeviceSpec{Lifecycle: lc, Addresses: addrs}}
	}
	store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{claimsIndex: claimKeys})
	for _, d := range []*itmv1.Device{
		dev("zed", itmv1.DeviceLifecycleActive, "10.0.0.1", "FD00:0::1"),
		dev("amy", itmv1.DeviceLifecycleActive, "10.0.0.1"),
		dev("old", itmv1.DeviceLifecycleRetired, "10.0.0.1"),
		dev("lost", itmv1.DeviceLifecycleLost, "fd00::1"),
	} {
		if err := store.Add(d); err != nil {
			t.Fatal(err)
		}
	}
	c := &Claims{indexer: store}
	for addr, want := range map[string][]string{
		"10.0.0.1": {"amy", "zed"}, // sorted; a Retired device claims nothing
		"fd00::1":  {"zed"},        // the canonical spelling; a Lost device claims nothing
		"10.0.0.2": nil,
	} {
		got, err := c.Claimants(addr)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Claimants(%s) = %q, want %q", addr, got, want)
		}
	}
	// The index follows updates: zed gives the address up.
	if err := store.Update(dev("zed", itmv1.DeviceLifecycleActive, "fd00::1")); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Claimants("10.0.0.1"); !slices.Equal(got, []string{"amy"}) {
		t.Errorf("after zed's update Claimants(10.0.0.1) = %q, want [amy]", got)
	}
	if got, _ := claimKeys("not a device"); got != nil {
		t.Errorf("claimKeys of a non-Device = %q, want none", got)
	}
}
