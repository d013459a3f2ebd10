package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/itmanager-io/itmanager/hack/cluster/node"
)

// teardown stops everything the cluster started and restores the host to
// the snapshot in .cluster/host.json. k is nil when cleaning up after a
// killed run (its processes are then found by their command lines). It
// goes on after errors, so one failure does not leave the rest behind.
func teardown(cfg Config, k *cluster) error {
	dir := cfg.Dir
	if err := checkStateDir(dir); err != nil {
		return err
	}
	before, err := loadSnapshot(filepath.Join(dir, "host.json"))
	if err != nil {
		return fmt.Errorf("no snapshot of the host before the cluster (.cluster/host.json): %w", err)
	}
	if err := validateSnapshot(before); err != nil {
		return err
	}
	var errs []error
	note := func(err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "    %v\n", err)
			errs = append(errs, err)
		}
	}
	// The device namespaces this cluster made (their markers go with them).
	var ownNetns []string
	for _, name := range node.Devices(dir) {
		ownNetns = append(ownNetns, node.NetnsName(name))
	}
	// Nobody may take a stopping cluster for a ready one.
	_ = os.Remove(filepath.Join(dir, "kubeconfig"))
	_ = os.Remove(filepath.Join(dir, "env"))

	// The node first, then the pods' processes while containerd still
	// runs, then containerd, then the control plane.
	byName := map[string]*proc{}
	if k != nil {
		for _, p := range k.procs {
			byName[p.name] = p
		}
	}
	for _, n := range []string{"kube-router", "kube-proxy", "kubelet"} {
		stopProc(byName[n])
	}
	killContainers()
	stopProc(byName["containerd"])
	for _, n := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		stopProc(byName[n])
	}
	// Whatever still names the state directory: shims, a killed run's
	// components.
	killReferencing(dir, filepath.Join(filepathRoot(dir), "bin"))

	note(unmountNew(before, dir, ownNetns))

	// kube-proxy's own cleanup, then what kubelet, kube-router and the
	// portmap plugin leave (kube-proxy --cleanup does not know them).
	if proxy, err := findBins(filepathRoot(dir)); err == nil {
		_ = exec.Command(proxy.kubeProxy, "--cleanup", "--v=0").Run()
	}
	note(restoreIPTables(before))
	after := takeSnapshot()
	for _, set := range ownIPSets(before.IPSets, after.IPSets) {
		note(sh("ipset", "destroy", set))
	}

	// The guard goes last of the packet rules: its counters are the proof.
	counts, gerr := node.ReadGuardCounters(cfg.GuardTable)
	if gerr == nil {
		fmt.Println("    Guard counters at stop:")
		printCounters(counts)
		for name, n := range counts {
			if n != 0 {
				note(fmt.Errorf("guard counter %s is %d: packets tried to leave the machine", name, n))
			}
		}
		note(sh("nft", "delete", "table", "inet", cfg.GuardTable))
	}

	for _, name := range node.Devices(dir) {
		note(node.DeleteDevice(dir, name))
	}
	// The bridge's ports (pods' and devices' veths; deleting one end
	// deletes its peer), then the bridge. Links of others, podman's veths
	// among them, are not the bridge's ports and stay.
	if out, err := output("ip", "-o", "link", "show", "master", cfg.Bridge); err == nil {
		for _, port := range linkNames(out) {
			note(sh("ip", "link", "del", port))
		}
	}
	for _, l := range diffNew(before.Links, takeSnapshot().Links) {
		if l == cfg.Bridge || strings.HasPrefix(l, "itmd") {
			note(sh("ip", "link", "del", l))
		}
	}
	_ = exec.Command("ip", "route", "del", "blackhole", cfg.PodCIDR).Run()

	restore, leave := sysctlRestores(before.Sysctls, takeSnapshot().Sysctls)
	for _, key := range sysctls {
		if want, ok := restore[key]; ok {
			note(os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(want), 0o644))
		}
	}
	for _, l := range leave {
		fmt.Fprintf(os.Stderr, "    %s\n", l)
	}

	note(unmountNew(before, dir, ownNetns))
	// /run/netns and /var/lib/cni are shared with podman (and others): only
	// this cluster's entries go, and the directory only when it is new and
	// empty. The other fixed paths are the node's own.
	for _, p := range fixedPaths {
		switch p {
		case netnsRoot:
			note(cleanShared(p, func(rel string) bool { return slices.Contains(ownNetns, rel) }, before.Paths[p]))
		case cniCacheRoot:
			note(cleanShared(p, ownCNICache(sandboxIDs(dir)), before.Paths[p]))
		default:
			if !before.Paths[p] {
				note(removeTree(p, dir, currentMountPoints()))
			}
		}
	}
	note(removeCgroups(before))

	// The state, except the logs and the stop status.
	for _, d := range []string{"var", "run", "etcd", "opt", "cni", "certs.d", "pki", "devices"} {
		note(removeTree(filepath.Join(dir, d), dir, currentMountPoints()))
	}
	for _, f := range []string{"kubeconfig.tmp", "kubelet.kubeconfig", "kube-proxy.kubeconfig", "controller-manager.kubeconfig", "scheduler.kubeconfig", "kube-router.kubeconfig"} {
		_ = os.Remove(filepath.Join(dir, f))
	}

	// The self-check: the host as it was before.
	left := Leftovers(before, takeSnapshot())
	if len(left) == 0 {
		fmt.Println("    Host check: iptables, nft, links, routes, mounts, ipsets, netns, cgroups, sysctls and fixed paths are as before")
	} else {
		fmt.Println("    Host check: LEFT BEHIND:")
		for _, l := range left {
			fmt.Println("      " + l)
		}
		errs = append(errs, fmt.Errorf("%d leftovers on the host (listed above)", len(left)))
	}
	if gerr != nil && k != nil { // a killed run's guard may be gone already
		errs = append(errs, fmt.Errorf("guard counters unreadable at stop: %w", gerr))
	}
	if len(errs) == 0 {
		_ = os.Remove(filepath.Join(dir, "host.json"))
	}
	return errors.Join(errs...)
}

func filepathRoot(dir string) string { return filepath.Dir(dir) }

func stopProc(p *proc) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "    %s did not stop within 15s: killing it\n", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// killContainers kills every process under the node's cgroup root (the
// pods' containers and sandboxes) and waits for the cgroups to empty.
func killContainers() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := cgroupPIDs(cgroupRoots(cgroupFS))
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupFS is where the cgroup hierarchies are mounted.
const cgroupFS = "/sys/fs/cgroup"

// cgroupRoots are the directories of kubelet's cgroupRoot
// ("/itmanager-cluster") that exist: one per cgroup v1 hierarchy
// (fsRoot/<hierarchy>/itmanager-cluster), or fsRoot/itmanager-cluster on
// cgroup v2.
func cgroupRoots(fsRoot string) []string {
	name := strings.Trim(cgroupRoot, "/")
	var out []string
	if _, err := os.Stat(filepath.Join(fsRoot, name)); err == nil {
		out = append(out, filepath.Join(fsRoot, name))
	}
	m, _ := filepath.Glob(filepath.Join(fsRoot, "*", name))
	for _, d := range m {
		// Not through a symlinked hierarchy (cpu -> cpu,cpuacct): once.
		if st, err := os.Lstat(filepath.Dir(d)); err == nil && st.Mode()&os.ModeSymlink == 0 {
			out = append(out, d)
		}
	}
	return out
}

// cgroupPIDs lists the processes in the cgroups under roots.
func cgroupPIDs(roots []string) []int {
	var pids []int
	seen := map[int]bool{}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] && pid != os.Getpid() {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killReferencing SIGKILLs every process of the node's binaries (under
// binDir) whose command line names dir; a shell or kubectl that merely
// reads the state directory is left alone.
func killReferencing(dir, binDir string) {
	if real, err := filepath.EvalSymlinks(binDir); err == nil {
		binDir = real
	}
	for range 3 {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !strings.Contains(string(cmdline), dir+"/") {
				continue
			}
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || !under(exe, binDir) {
				continue
			}
			found = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if !found {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

const (
	netnsRoot    = "/run/netns"
	cniCacheRoot = "/var/lib/cni"
	// cniNetwork is the name in templates/cni.conflist: libcni caches a
	// result per attachment as /var/lib/cni/results/<network>-<id>-<ifname>.
	cniNetwork = "itm-cluster"
)

// cniLoopback is the network of the loopback attachment containerd's CRI
// makes in every pod sandbox: its results are
// results/cni-loopback-<sandbox id>-lo.
const cniLoopback = "cni-loopback"

// ownCNICache is what of /var/lib/cni (relative path) is this cluster's: the
// results of its own network, and the loopback results of its own pod
// sandboxes (sandboxes: their ids). Pods killed at stop never had their CNI
// DEL, so those results stay unless claimed; another runtime's loopback
// results name sandboxes that are not this cluster's.
func ownCNICache(sandboxes []string) func(rel string) bool {
	return func(rel string) bool {
		dir, file := filepath.Split(rel)
		if dir != "results/" {
			return false
		}
		if strings.HasPrefix(file, cniNetwork+"-") {
			return true
		}
		id, ok := strings.CutPrefix(file, cniLoopback+"-")
		if !ok {
			return false
		}
		id, ok = strings.CutSuffix(id, "-lo")
		return ok && id != "" && slices.Contains(sandboxes, id)
	}
}

// sandboxIDs are the pod sandboxes in this cluster's containerd root (dir:
// the state directory), read before the state is removed.
func sandboxIDs(dir string) []string {
	entries, err := os.ReadDir(filepath.Join(dir, "var", "lib", "containerd", "io.containerd.grpc.v1.cri", "sandboxes"))
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// ownMount says whether a mount point new since the start is this
// cluster's to unmount: under the state directory; in /run/netns only its
// own device namespaces, and /run/netns itself (ip-netns's bind mount)
// only once it holds nothing (else other programs' namespaces under it
// would be detached); nothing under /var/lib/cni; under the node's other
// fixed paths, anything.
func ownMount(p, dir string, ownNetns []string, netnsEmpty bool) bool {
	switch {
	case under(p, dir):
		return true
	case p == netnsRoot:
		return netnsEmpty
	case under(p, netnsRoot):
		return filepath.Dir(p) == netnsRoot && slices.Contains(ownNetns, filepath.Base(p))
	case under(p, cniCacheRoot):
		return false
	}
	return underAny(p, fixedPaths)
}

// cleanShared removes the entries of root that own (given the path
// relative to root) claims, then, if root did not exist before, the
// directories left empty, root last. Others' entries stay.
func cleanShared(root string, own func(rel string) bool, existedBefore bool) error {
	var files, dirs []string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case d.IsDir():
			dirs = append(dirs, path)
		case own(rel):
			files = append(files, path)
		}
		return nil
	})
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if !existedBefore {
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i]) // fails, and stays, while not empty
		}
	}
	return errors.Join(errs...)
}

// unmountNew unmounts, deepest first, what was mounted since before and
// is this cluster's (ownMount), lazily if busy.
func unmountNew(before Snapshot, dir string, ownNetns []string) error {
	var errs []error
	for range 3 {
		now := takeSnapshot()
		var points []string
		for _, m := range diffNew(before.Mounts, now.Mounts) {
			p := mountPoint(m)
			if ownMount(p, dir, ownNetns, emptyDir(netnsRoot)) {
				points = append(points, p)
			}
		}
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		errs = nil
		for _, p := range points {
			if err := syscall.Unmount(p, 0); err != nil {
				if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// diffNew lists the entries of b not in a.
func diffNew(a, b []string) []string {
	var out []string
	for _, d := range diffLines(a, b) {
		if strings.HasPrefix(d, "+ ") {
			out = append(out, d[2:])
		}
	}
	return out
}

// restoreIPTables removes the node's chains and rules from iptables and
// ip6tables, and then the tables iptables-nft made for them only.
func restoreIPTables(before Snapshot) error {
	var errs []error
	for _, t := range []string{"iptables", "ip6tables"} {
		for range 2 { // kube-router may re-add a rule while it stops
			after, err := output(t + "-save")
			if err != nil {
				errs = append(errs, err)
				break
			}
			input := iptablesCleanup(before.IPTables[t], after)
			if input == "" {
				break
			}
			cmd := exec.Command(t+"-restore", "--noflush", "-w")
			cmd.Stdin = strings.NewReader(input)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s-restore: %w: %s\ninput:\n%s", t, err, out, input))
			}
		}
	}
	if out, err := output("nft", "-j", "list", "ruleset"); err == nil {
		now, err := nftChains(out)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, argv := range emptyNewChains(before.NFTChains, now) {
			errs = append(errs, sh(argv...))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the node's cgroup root (and the pod cgroups in
// it) where it did not exist before, deepest first.
func removeCgroups(before Snapshot) error {
	had := map[string]bool{}
	for _, c := range before.Cgroups {
		had[c] = true
	}
	roots := cgroupRoots(cgroupFS)
	var errs []error
	for _, root := range roots {
		if had[root] {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ownIPSet: the ipsets kube-router v2.1.0 makes (pkg/controllers/netpol:
// KUBE-SRC-*, KUBE-DST-*; pkg/controllers: kube-router-*; IPv6 ones with
// the "inet6:" prefix of pkg/utils/ipset.go). kube-proxy runs in iptables
// mode and makes none.
func ownIPSet(name string) bool {
	name = strings.TrimPrefix(name, "inet6:")
	return strings.HasPrefix(name, "KUBE-SRC-") || strings.HasPrefix(name, "KUBE-DST-") || strings.HasPrefix(name, "kube-router-")
}

// ownIPSets are the sets new since before that kube-router made; others'
// new sets stay (and show in the host check).
func ownIPSets(before, after []string) []string {
	var out []string
	for _, s := range diffNew(before, after) {
		if ownIPSet(s) {
			out = append(out, s)
		}
	}
	return out
}

func emptyDir(p string) bool {
	entries, err := os.ReadDir(p)
	return err == nil && len(entries) == 0
}

// makeCgroupRoot creates kubelet's cgroup root name in every cgroup v1
// hierarchy under fsRoot (kubelet checks cpu, cpuacct, cpuset, memory,
// systemd, pids and hugetlb, pkg/kubelet/cm/cgroup_v1_manager_linux.go
// Validate; the others are made too, as runc joins them), or once on
// cgroup v2. A new cpuset cgroup gets its parent's cpus and mems, without
// which no task may join it. It returns what it created.
func makeCgroupRoot(fsRoot, name string) ([]string, error) {
	name = strings.Trim(name, "/")
	var hierarchies []string
	if _, err := os.Stat(filepath.Join(fsRoot, "cgroup.controllers")); err == nil {
		hierarchies = []string{fsRoot} // cgroup v2
	} else {
		entries, err := os.ReadDir(fsRoot)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() { // not the symlinks (cpu -> cpu,cpuacct)
				hierarchies = append(hierarchies, filepath.Join(fsRoot, e.Name()))
			}
		}
	}
	var made []string
	for _, h := range hierarchies {
		dir := filepath.Join(h, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return made, err
		}
		made = append(made, dir)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if cur, err := os.ReadFile(filepath.Join(dir, f)); err == nil && strings.TrimSpace(string(cur)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return made, fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return made, nil
}

// sysctlSetBy are the values the node sets: the cluster ip_forward,
// kubelet (pkg/kubelet/cm setupKernelTunables) overcommit and panic,
// kube-proxy the others if it ever does.
var sysctlSetBy = map[string]string{
	"net.ipv4.ip_forward": "1", "vm.overcommit_memory": "1", "kernel.panic": "10", "kernel.panic_on_oops": "1",
	"net.ipv4.conf.all.route_localnet": "1", "net.bridge.bridge-nf-call-iptables": "1",
	"net.bridge.bridge-nf-call-ip6tables": "1", "net.ipv6.conf.all.forwarding": "1",
}

// sysctlRestores: a setting that changed goes back to its value before
// only while it still has the value the node sets; one with another value
// was changed since by someone else, and is left (and said so).
func sysctlRestores(before, now map[string]string) (restore map[string]string, leave []string) {
	restore = map[string]string{}
	for _, key := range sysctls {
		was, ok := before[key]
		cur, ok2 := now[key]
		if !ok || !ok2 || cur == was {
			continue
		}
		if cur == sysctlSetBy[key] {
			restore[key] = was
		} else {
			leave = append(leave, fmt.Sprintf("sysctl %s is %s, neither %s (before) nor %s (the node's): someone else set it, left as is", key, cur, was, sysctlSetBy[key]))
		}
	}
	return restore, leave
}
