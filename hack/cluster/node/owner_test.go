package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost points the package at temporary /run/netns and /sys/class/net
// and records commands instead of running them.
func fakeHost(t *testing.T, fail string) (*Cluster, *[]string) {
	t.Helper()
	root := t.TempDir()
	oldNetns, oldLinks, oldRun := netnsDir, linksDir, runCmd
	netnsDir, linksDir = filepath.Join(root, "netns"), filepath.Join(root, "net")
	for _, d := range []string{netnsDir, linksDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var cmds []string
	runCmd = func(argv ...string) error {
		s := strings.Join(argv, " ")
		cmds = append(cmds, s)
		if fail != "" && strings.HasPrefix(s, fail) {
			return os.ErrExist
		}
		return nil
	}
	t.Cleanup(func() { netnsDir, linksDir, runCmd = oldNetns, oldLinks, oldRun })
	return &Cluster{Dir: filepath.Join(root, "state"), Env: env}, &cmds
}

func TestDeviceNamespacesArePrefixed(t *testing.T) {
	p, _ := env.DeviceAddress("10.244.77.5")
	if got := strings.Join(env.DeviceCommands("dev1", p)[0], " "); got != "ip netns add itm-dev-dev1" {
		t.Errorf("first command %q", got)
	}
	if got := strings.Join(Exec("dev1", "true").Args, " "); got != "ip netns exec itm-dev-dev1 true" {
		t.Errorf("Exec runs %q", got)
	}
}

func TestAddDeviceRefusesAnExistingNamespaceOrLinkAndDeletesNothing(t *testing.T) {
	c, cmds := fakeHost(t, "")
	if err := os.WriteFile(filepath.Join(netnsDir, NetnsName("dev1")), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.AddDevice("dev1", "10.244.77.5"); err == nil {
		t.Fatal("AddDevice adopted an existing namespace")
	}
	if err := os.WriteFile(filepath.Join(linksDir, HostVeth("dev2")), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.AddDevice("dev2", "10.244.77.6"); err == nil {
		t.Fatal("AddDevice adopted an existing link")
	}
	if len(*cmds) != 0 {
		t.Errorf("ran %v", *cmds)
	}
	if d := Devices(c.Dir); len(d) != 0 {
		t.Errorf("ownership markers %v for devices it did not make", d)
	}
}

func TestAddDeviceWhoseNamespaceIsRefusedLeavesNoMarkerAndDeletesNothing(t *testing.T) {
	c, cmds := fakeHost(t, "ip netns add")
	if err := c.AddDevice("dev1", "10.244.77.5"); err == nil {
		t.Fatal("no error")
	}
	if strings.Join(*cmds, "\n") != "ip netns add itm-dev-dev1" {
		t.Errorf("ran %v, want only the namespace's creation", *cmds)
	}
	if d := Devices(c.Dir); len(d) != 0 {
		t.Errorf("markers %v", d)
	}
}

func TestDelDeviceRemovesOnlyWhatHasAMarker(t *testing.T) {
	c, cmds := fakeHost(t, "")
	// Someone else's namespace and link of a device name this cluster
	// never made.
	_ = os.WriteFile(filepath.Join(netnsDir, NetnsName("other")), nil, 0o644)
	_ = os.WriteFile(filepath.Join(linksDir, HostVeth("other")), nil, 0o644)
	if err := c.DelDevice("other"); err != nil {
		t.Fatal(err)
	}
	if len(*cmds) != 0 {
		t.Fatalf("deleted another's: %v", *cmds)
	}
	// A device it made: namespace and veth go, and its marker.
	if err := c.AddDevice("dev1", "10.244.77.5"); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(netnsDir, NetnsName("dev1")), nil, 0o644)
	_ = os.WriteFile(filepath.Join(linksDir, HostVeth("dev1")), nil, 0o644)
	*cmds = nil
	if err := c.DelDevice("dev1"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(*cmds, "\n"); got != "ip netns del itm-dev-dev1\nip link del "+HostVeth("dev1") {
		t.Errorf("ran %q", got)
	}
	if d := Devices(c.Dir); len(d) != 0 {
		t.Errorf("marker left: %v", d)
	}
}
