package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTeardownDestroysOnlyKubeRoutersNewIPSets(t *testing.T) {
	before := []string{"KUBE-SRC-OLD", "f2b-sshd"}
	after := []string{"KUBE-SRC-OLD", "f2b-sshd", "KUBE-SRC-ABC", "KUBE-DST-DEF", "inet6:KUBE-DST-DEF",
		"kube-router-local-ips", "podman-set", "f2b-nginx", "TMP-XYZ", "KUBE-CLUSTER-IP"}
	got := ownIPSets(before, after)
	want := []string{"KUBE-SRC-ABC", "KUBE-DST-DEF", "inet6:KUBE-DST-DEF", "kube-router-local-ips"}
	if !slices.Equal(got, want) {
		t.Errorf("destroyed %v, want %v (the sets that existed before and others' new sets stay)", got, want)
	}
}

func TestTeardownUnmountsOnlyItsOwnMounts(t *testing.T) {
	own := []string{"itm-dev-dev1"}
	cases := []struct {
		point      string
		netnsEmpty bool
		want       bool
	}{
		{"/lab/.cluster/run/containerd/x/rootfs", false, true},
		{"/var/lib/kubelet/pods/x/volumes", false, true},
		{"/run/netns/itm-dev-dev1", false, true},
		{"/run/netns/netns-3f2a", false, false}, // podman's
		{"/run/netns/cni-1234", false, false},
		{"/run/netns/itm-dev-dev1/x", false, false},
		{"/run/netns", false, false}, // others' namespaces still under it
		{"/run/netns", true, true},
		{"/var/lib/cni", false, false},
		{"/var/lib/cni/results", false, false},
		{"/var/lib/containers/storage/overlay/x", false, false},
		{"/lab/.cluster-other/x", false, false},
	}
	for _, c := range cases {
		if got := ownMount(c.point, "/lab/.cluster", own, c.netnsEmpty); got != c.want {
			t.Errorf("ownMount(%s, netns empty %v) = %v, want %v", c.point, c.netnsEmpty, got, c.want)
		}
	}
}

func TestCleanSharedRemovesOnlyTheClustersCNIResultsAndKeepsOthers(t *testing.T) {
	for _, existed := range []bool{false, true} {
		root := filepath.Join(t.TempDir(), "cni")
		files := map[string]bool{ // path → ours
			"results/itm-cluster-abc-eth0": true,
			"results/itm-cluster-def-eth0": true,
			"results/cni-loopback-s1-lo":   true,
			"results/cni-loopback-s9-lo":   false, // another runtime's sandbox
			"results/cni-loopback--lo":     false,
			"results/podman-abc-eth0":      false,
			"networks/podman/10.88.0.2":    false,
			"results/sub/itm-cluster-x":    false,
			"itm-cluster-top":              false,
		}
		for f := range files {
			mustWrite(t, filepath.Join(root, f))
		}
		if err := cleanShared(root, ownCNICache([]string{"s1", "s2"}), existed); err != nil {
			t.Fatal(err)
		}
		for f, ours := range files {
			_, err := os.Stat(filepath.Join(root, f))
			if ours && err == nil {
				t.Errorf("existed %v: %s (ours) stays", existed, f)
			}
			if !ours && err != nil {
				t.Errorf("existed %v: %s (another's) removed: %v", existed, f, err)
			}
		}
	}
	// New and left empty: it goes; new but another's entries in it: it stays.
	root := filepath.Join(t.TempDir(), "cni")
	mustWrite(t, filepath.Join(root, "results", "itm-cluster-abc-eth0"))
	if err := cleanShared(root, ownCNICache(nil), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Error("a new /var/lib/cni holding only the cluster's results stays")
	}
	mustWrite(t, filepath.Join(root, "results", "itm-cluster-abc-eth0"))
	if err := cleanShared(root, ownCNICache(nil), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Error("a /var/lib/cni that existed before is removed")
	}
}

func TestCleanSharedRemovesOnlyTheClustersNetnsFiles(t *testing.T) {
	root := filepath.Join(t.TempDir(), "netns")
	mustWrite(t, filepath.Join(root, "itm-dev-dev1"))
	mustWrite(t, filepath.Join(root, "netns-podman"))
	if err := cleanShared(root, func(rel string) bool { return slices.Contains([]string{"itm-dev-dev1"}, rel) }, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "netns-podman")); err != nil {
		t.Errorf("podman's namespace removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "itm-dev-dev1")); err == nil {
		t.Error("the cluster's namespace file stays")
	}
}

func TestCNIConfigNamesTheNetworkWhoseCacheTheStopRemoves(t *testing.T) {
	out, err := defaultConfig("/lab").render("cni.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct{ Name string }
	if err := json.Unmarshal(out, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != cniNetwork {
		t.Errorf("CNI network %q, the stop removes /var/lib/cni/results/%s-*", conf.Name, cniNetwork)
	}
}

func mustWrite(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeCgroupV1 is a cgroup v1 tree: hierarchies, a symlink, another
// kubelet's kubepods with a process.
func fakeCgroupV1(t *testing.T) string {
	t.Helper()
	fs := t.TempDir()
	for _, h := range []string{"cpuset", "memory", "systemd", "pids"} {
		if err := os.Mkdir(filepath.Join(fs, h), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("memory", filepath.Join(fs, "mem-link")); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"cpuset/cpuset.cpus": "0-1\n", "cpuset/cpuset.mems": "0\n", "memory/kubepods/pod1/cgroup.procs": "4242\n"} {
		mustWrite(t, filepath.Join(fs, f))
		if err := os.WriteFile(filepath.Join(fs, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fs
}

func TestKubeletCgroupRootIsMadeInEveryHierarchyWithTheCpusetOfItsParent(t *testing.T) {
	fs := fakeCgroupV1(t)
	made, err := makeCgroupRoot(fs, cgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, h := range []string{"cpuset", "memory", "pids", "systemd"} {
		want = append(want, filepath.Join(fs, h, "itmanager-cluster"))
	}
	if !slices.Equal(made, want) {
		t.Errorf("made %v, want %v", made, want)
	}
	for f, v := range map[string]string{"cpuset.cpus": "0-1\n", "cpuset.mems": "0\n"} {
		got, err := os.ReadFile(filepath.Join(fs, "cpuset", "itmanager-cluster", f))
		if err != nil || string(got) != v {
			t.Errorf("%s = %q (%v), want the parent's %q", f, got, err, v)
		}
	}
	if again, err := makeCgroupRoot(fs, cgroupRoot); err != nil || len(again) != 0 {
		t.Errorf("second run made %v (%v): an existing root is not made again", again, err)
	}
	if roots := cgroupRoots(fs); !slices.Equal(roots, want) {
		t.Errorf("cgroupRoots = %v, want %v", roots, want)
	}
}

func TestStopKillsOnlyProcessesUnderTheClustersCgroupRoot(t *testing.T) {
	fs := fakeCgroupV1(t)
	if _, err := makeCgroupRoot(fs, cgroupRoot); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(fs, "memory", "itmanager-cluster", "kubepods", "besteffort", "podx", "c1", "cgroup.procs")
	mustWrite(t, p)
	if err := os.WriteFile(p, []byte("101\n102\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := cgroupPIDs(cgroupRoots(fs))
	if !slices.Equal(got, []int{101, 102}) {
		t.Errorf("pids %v, want 101 102 only (4242 is another kubelet's pod)", got)
	}
}

func TestSysctlIsRestoredOnlyWhileItHasTheValueTheNodeSet(t *testing.T) {
	before := map[string]string{"net.ipv4.ip_forward": "0", "vm.overcommit_memory": "0", "kernel.panic": "0", "kernel.panic_on_oops": "0"}
	now := map[string]string{
		"net.ipv4.ip_forward":  "1", // the cluster's: back to 0
		"vm.overcommit_memory": "2", // someone else's since: stays
		"kernel.panic":         "0", // unchanged
		"kernel.panic_on_oops": "1", // kubelet's: back to 0
	}
	restore, leave := sysctlRestores(before, now)
	want := map[string]string{"net.ipv4.ip_forward": "0", "kernel.panic_on_oops": "0"}
	if len(restore) != len(want) || restore["net.ipv4.ip_forward"] != "0" || restore["kernel.panic_on_oops"] != "0" {
		t.Errorf("restore %v, want %v", restore, want)
	}
	if len(leave) != 1 || !strings.Contains(leave[0], "vm.overcommit_memory is 2") {
		t.Errorf("left %v, want a note for vm.overcommit_memory", leave)
	}
}

func TestSandboxIDsAreTheClustersContainerdSandboxes(t *testing.T) {
	dir := t.TempDir()
	if got := sandboxIDs(dir); got != nil {
		t.Errorf("no containerd root: %v", got)
	}
	sandboxes := filepath.Join(dir, "var", "lib", "containerd", "io.containerd.grpc.v1.cri", "sandboxes")
	for _, id := range []string{"aa11", "bb22"} {
		if err := os.MkdirAll(filepath.Join(sandboxes, id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, filepath.Join(sandboxes, "not-a-sandbox"))
	if got := sandboxIDs(dir); !slices.Equal(got, []string{"aa11", "bb22"}) {
		t.Errorf("sandboxIDs = %v", got)
	}
}
