package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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
	before, err := loadSnapshot(filepath.Join(dir, "host.json"))
	if err != nil {
		return fmt.Errorf("no snapshot of the host before the cluster (.cluster/host.json): %w", err)
	}
	var errs []error
	note := func(err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "    %v\n", err)
			errs = append(errs, err)
		}
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

	note(unmountNew(before, dir))

	// kube-proxy's own cleanup, then what kubelet, kube-router and the
	// portmap plugin leave (kube-proxy --cleanup does not know them).
	if proxy, err := findBins(filepathRoot(dir)); err == nil {
		_ = exec.Command(proxy.kubeProxy, "--cleanup", "--v=0").Run()
	}
	note(restoreIPTables(before))
	after := takeSnapshot()
	for _, set := range diffNew(before.IPSets, after.IPSets) {
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

	for _, key := range sysctls {
		want, ok := before.Sysctls[key]
		if !ok {
			continue
		}
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) != want {
			note(os.WriteFile(path, []byte(want), 0o644))
		}
	}

	note(unmountNew(before, dir))
	for _, p := range fixedPaths {
		if !before.Paths[p] {
			note(os.RemoveAll(p))
		}
	}
	note(removeCgroups(before))

	// The state, except the logs and the stop status.
	for _, d := range []string{"var", "run", "etcd", "opt", "cni", "pki", "devices"} {
		note(os.RemoveAll(filepath.Join(dir, d)))
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

// killContainers kills every process in kubelet's pod cgroups (the pods'
// containers and sandboxes) and waits for the cgroups to empty.
func killContainers() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := cgroupPIDs()
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cgroupPIDs() []int {
	var pids []int
	seen := map[int]bool{}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
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

// unmountNew unmounts, deepest first, what was mounted since before under
// the state directory or a fixed path (lazily if busy).
func unmountNew(before Snapshot, dir string) error {
	var errs []error
	for range 3 {
		now := takeSnapshot()
		var points []string
		for _, m := range diffNew(before.Mounts, now.Mounts) {
			p := mountPoint(m)
			if under(p, dir) || underAny(p, fixedPaths) {
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

// removeCgroups removes kubelet's pod cgroups that did not exist before,
// deepest first.
func removeCgroups(before Snapshot) error {
	had := map[string]bool{}
	for _, c := range before.Cgroups {
		had[c] = true
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
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
