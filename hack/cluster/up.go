package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/itmanager-io/itmanager/hack/cluster/node"
)

// e2eImages are the test images of make e2e-images, imported when podman
// has them.
var e2eImages = []string{e2ePause, "localhost/itmanager-e2e-upgrade:dev", "localhost/itmanager-e2e-probe:dev"}

// bins are the binaries of the node, cached in bin/ by version.
type bins struct {
	etcd, apiserver, controllerManager, scheduler, kubelet, kubeProxy string
	containerdDir, kubeRouter                                         string
}

func (b bins) containerd() string { return filepath.Join(b.containerdDir, "containerd") }
func (b bins) ctr() string        { return filepath.Join(b.containerdDir, "ctr") }

var versionRE = regexp.MustCompile(`(?m)^(CONTAINERD_VERSION|KUBE_ROUTER_VERSION)=(\S+)$`)

// findBins reads the versions from hack/control-plane.sh, the one place
// that pins them.
func findBins(root string) (bins, error) {
	script, err := os.ReadFile(filepath.Join(root, "hack", "control-plane.sh"))
	if err != nil {
		return bins{}, err
	}
	v := map[string]string{}
	for _, m := range versionRE.FindAllStringSubmatch(string(script), -1) {
		v[m[1]] = m[2]
	}
	k8s, err := output(filepath.Join(root, "hack", "control-plane.sh"), "--print")
	if err != nil {
		return bins{}, err
	}
	k8s = strings.TrimSpace(k8s)
	b := bins{
		etcd: filepath.Join(k8s, "etcd"), apiserver: filepath.Join(k8s, "kube-apiserver"),
		controllerManager: filepath.Join(k8s, "kube-controller-manager"), scheduler: filepath.Join(k8s, "kube-scheduler"),
		kubelet: filepath.Join(k8s, "kubelet"), kubeProxy: filepath.Join(k8s, "kube-proxy"),
		containerdDir: filepath.Join(root, "bin", "containerd", v["CONTAINERD_VERSION"]),
		kubeRouter:    filepath.Join(root, "bin", "kube-router", v["KUBE_ROUTER_VERSION"], "kube-router"),
	}
	for _, p := range []string{b.etcd, b.apiserver, b.controllerManager, b.scheduler, b.kubelet, b.kubeProxy, b.containerd(), b.ctr(), filepath.Join(b.containerdDir, "containerd-shim-runc-v2"), b.kubeRouter} {
		if _, err := os.Stat(p); err != nil {
			return bins{}, fmt.Errorf("%s is missing: run hack/control-plane.sh --node (make cluster does)", p)
		}
	}
	return b, nil
}

// proc is a child process whose exit closes done.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// exitErr is how the process ended; a clean exit is an error too, as
// every component should run until stopped.
func (p *proc) exitErr() error {
	if p.err == nil {
		return errors.New("exit status 0")
	}
	return p.err
}

type cluster struct {
	root    string
	cfg     Config
	bins    bins
	procs   []*proc
	started time.Time
	phases  []string
}

func (k *cluster) phase(name string) {
	msg := fmt.Sprintf("%-28s %6.1fs", name, time.Since(k.started).Seconds())
	k.phases = append(k.phases, msg)
	fmt.Printf("==> %s (at %.1fs)\n", name, time.Since(k.started).Seconds())
}

func (k *cluster) start(name, bin string, args []string, env ...string) error {
	logFile, err := os.OpenFile(filepath.Join(k.cfg.Dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	// Own process group: a terminal's Ctrl-C reaches only this program,
	// which stops the node in order. If this program dies, so do they.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	k.procs = append(k.procs, p)
	return nil
}

// waitFor polls ok until it holds, a watched process exits, or timeout.
func (k *cluster) waitFor(ctx context.Context, what string, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		for _, p := range k.procs {
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited (see .cluster/logs/%s.log): %w", what, p.name, p.name, p.exitErr())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: timed out after %s (logs in .cluster/logs)", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func sh(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(data), ") Z ")
}

// runningPID is the pid of a live `cluster up` of this checkout, or 0.
func runningPID(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid == os.Getpid() || !alive(pid) {
		return 0
	}
	return pid
}

func up(root string, cfg Config, img string, extra []string) error {
	dir := cfg.Dir
	if pid := runningPID(dir); pid != 0 {
		return fmt.Errorf("a cluster from this checkout is already running (pid %d): make cluster-down stops it", pid)
	}
	if _, err := os.Stat(filepath.Join(dir, "host.json")); err == nil {
		fmt.Println("==> An earlier make cluster was killed or did not stop cleanly: cleaning up after it first")
		if err := teardown(cfg, nil); err != nil {
			return fmt.Errorf("cleaning up the killed run: %w (fix by hand, then remove .cluster)", err)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + cfg.Bridge); err == nil {
		return fmt.Errorf("link %s exists but no cluster of this checkout does: another checkout's cluster runs on this machine (one at a time: its make cluster-down stops it)", cfg.Bridge)
	}
	if sh("nft", "list", "table", "inet", cfg.GuardTable) == nil {
		return fmt.Errorf("nftables table inet %s exists but no cluster of this checkout does: another checkout's cluster runs on this machine", cfg.GuardTable)
	}
	b, err := findBins(root)
	if err != nil {
		return err
	}
	k := &cluster{root: root, cfg: cfg, bins: b, started: time.Now()}

	// From nothing: the state directory of an earlier run goes, all but
	// its logs, kept as logs.previous for a look at why it stopped.
	prevLogs := dir + ".logs.previous"
	_ = os.RemoveAll(prevLogs)
	_ = os.Rename(filepath.Join(dir, "logs"), prevLogs)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Rename(prevLogs, filepath.Join(dir, "logs.previous"))
	for _, d := range []string{"logs", "cni/net.d", "var/log/pods", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, "stop-status"))
	before := takeSnapshot()
	// Saved before the first change, so a killed run can be undone.
	if err := before.save(filepath.Join(dir, "host.json")); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	runErr := k.bringUp(ctx, img, extra)
	if runErr == nil {
		runErr = k.serve(ctx)
	}
	stop()
	fmt.Println("==> Stopping the cluster and restoring the host")
	t0 := time.Now()
	downErr := teardown(cfg, k)
	fmt.Printf("==> Stopped in %.1fs\n", time.Since(t0).Seconds())
	err = errors.Join(runErr, downErr)
	status := "ok\n"
	if err != nil {
		status = "failed: " + err.Error() + "\n"
	}
	_ = os.WriteFile(filepath.Join(dir, "stop-status"), []byte(status), 0o644)
	_ = os.Remove(filepath.Join(dir, "pid"))
	return err
}

// serve runs until a signal, or until a component exits on its own.
func (k *cluster) serve(ctx context.Context) error {
	cases := make(chan *proc, len(k.procs))
	for _, p := range k.procs {
		go func(p *proc) {
			<-p.done
			cases <- p
		}(p)
	}
	select {
	case <-ctx.Done():
		return nil
	case p := <-cases:
		return fmt.Errorf("%s exited on its own (see .cluster/logs/%s.log): %w", p.name, p.name, p.exitErr())
	}
}

func (k *cluster) bringUp(ctx context.Context, img string, extra []string) error {
	cfg := k.cfg
	pause, err := choosePause(k.root)
	if err != nil {
		return err
	}
	cfg.SandboxImage = pause
	k.cfg = cfg
	k.phase("Pause image " + pause)

	if err := writePKI(cfg, time.Now()); err != nil {
		return fmt.Errorf("PKI: %w", err)
	}
	for file, tmpl := range renderedFiles {
		data, err := cfg.render(tmpl)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, file), data, 0o644); err != nil {
			return err
		}
	}
	k.phase("PKI and configuration")

	if err := hostNetwork(cfg); err != nil {
		return err
	}
	k.phase("Host network and guard")

	if err := k.start("etcd", k.bins.etcd, cfg.etcdArgs()); err != nil {
		return err
	}
	if err := k.waitFor(ctx, "etcd", time.Minute, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", cfg.EtcdPort)) //nolint:noctx // bounded by waitFor
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return err
	}
	k.phase("etcd healthy")

	if err := k.start("kube-apiserver", k.bins.apiserver, cfg.apiserverArgs()); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(cfg.Dir, "kubeconfig.tmp"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	if err := k.waitFor(ctx, "kube-apiserver /readyz", 2*time.Minute, func() bool {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	}); err != nil {
		return err
	}
	k.phase("kube-apiserver ready")

	if err := k.start("kube-controller-manager", k.bins.controllerManager, cfg.controllerManagerArgs()); err != nil {
		return err
	}
	if err := k.start("kube-scheduler", k.bins.scheduler, cfg.schedulerArgs()); err != nil {
		return err
	}
	if err := kubeRouterRBAC(ctx, cs); err != nil {
		return err
	}

	if err := k.start("containerd", k.bins.containerd(), cfg.containerdArgs(), "PATH="+k.bins.containerdDir+":"+os.Getenv("PATH")); err != nil {
		return err
	}
	if err := k.waitFor(ctx, "containerd", time.Minute, func() bool {
		return sh(k.bins.ctr(), "-a", cfg.ContainerdSocket(), "version") == nil
	}); err != nil {
		return err
	}
	k.phase("containerd running")
	if err := importImages(k.bins.ctr(), cfg, []string{pause}, true); err != nil {
		return err
	}
	k.phase("Pause image imported")

	if err := k.start("kubelet", k.bins.kubelet, cfg.kubeletArgs()); err != nil {
		return err
	}
	if err := k.start("kube-proxy", k.bins.kubeProxy, cfg.kubeProxyArgs()); err != nil {
		return err
	}
	if err := k.waitFor(ctx, "node "+cfg.NodeName+" Ready", 3*time.Minute, func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	}); err != nil {
		return err
	}
	k.phase("Node Ready")

	if err := k.start("kube-router", k.bins.kubeRouter, cfg.kubeRouterArgs()); err != nil {
		return err
	}
	if err := k.waitFor(ctx, "kube-router's firewall chains", 2*time.Minute, func() bool {
		return sh("iptables", "-w", "-S", "KUBE-ROUTER-FORWARD") == nil
	}); err != nil {
		return err
	}
	k.phase("kube-router enforcing")

	if err := k.waitFor(ctx, "ServiceAccount default/default", time.Minute, func() bool {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return err
	}

	var images []string
	for _, i := range append(append(e2eImages, img), extra...) {
		if i != "" && i != pause {
			images = append(images, i)
		}
	}
	if err := importImages(k.bins.ctr(), cfg, images, false); err != nil {
		return err
	}
	k.phase("Images imported")

	if err := os.WriteFile(filepath.Join(cfg.Dir, "env"), []byte(cfg.Env().Format()), 0o644); err != nil {
		return err
	}
	// Last: its presence says the cluster is ready.
	if err := os.Rename(filepath.Join(cfg.Dir, "kubeconfig.tmp"), filepath.Join(cfg.Dir, "kubeconfig")); err != nil {
		return err
	}
	k.report()
	return nil
}

func (k *cluster) report() {
	fmt.Println("\nPhases (seconds since start):")
	for _, p := range k.phases {
		fmt.Println("  " + p)
	}
	fmt.Println("\nMemory (RSS):")
	var total int
	for _, p := range k.procs {
		kb := rssKB(p.cmd.Process.Pid)
		total += kb
		fmt.Printf("  %-24s %6d MB\n", p.name, kb/1024)
	}
	fmt.Printf("  %-24s %6d MB\n", "total", total/1024)
	fmt.Println()
	if counts, err := node.ReadGuardCounters(k.cfg.GuardTable); err == nil {
		printCounters(counts)
	}
	fmt.Printf(`
The cluster is ready (node %s, %s). Next:
  export KUBECONFIG=%s
  bin/kubectl get nodes
  make e2e
  make cluster-down        (or Ctrl-C here)
`, k.cfg.NodeName, k.cfg.NodeIP, filepath.Join(k.cfg.Dir, "kubeconfig"))
}

func rssKB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// hostNetwork makes the node's links, addresses, routes and the guard.
func hostNetwork(cfg Config) error {
	guard := filepath.Join(cfg.Dir, "guard.nft")
	for _, argv := range hostNetworkCommands(cfg, guard) {
		if err := sh(argv...); err != nil {
			return err
		}
	}
	return nil
}

// hostNetworkCommands: the guard first, so nothing flows before it counts.
func hostNetworkCommands(cfg Config, guardFile string) [][]string {
	return [][]string{
		{"nft", "-f", guardFile},
		{"ip", "link", "add", cfg.Bridge, "type", "bridge"},
		// The pod gateway first: Debian's CNI bridge plugin refuses a
		// bridge whose first IPv4 address is another one.
		{"ip", "addr", "add", cfg.PodGateway + "/24", "dev", cfg.Bridge},
		{"ip", "addr", "add", cfg.NodeIP + "/32", "dev", cfg.Bridge},
		{"ip", "addr", "add", cfg.DeviceGW + "/24", "dev", cfg.Bridge},
		{"ip", "link", "set", cfg.Bridge, "up"},
		{"ip", "route", "add", "blackhole", cfg.PodCIDR},
		{"ip", "route", "add", cfg.ServiceCIDR, "dev", cfg.Bridge, "src", cfg.NodeIP},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
}

// kubeRouterRBAC: kube-router reads what it needs to enforce policies.
func kubeRouterRBAC(ctx context.Context, cs kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "itm:kube-router"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "services", "nodes", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "itm:kube-router"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "itm:kube-router"}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube-router ClusterRole: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube-router ClusterRoleBinding: %w", err)
	}
	return nil
}

func podmanHas(image string) bool {
	return exec.Command("podman", "image", "exists", image).Run() == nil
}

// choosePause: the e2e pause image if podman has it, else this program's
// own, built when missing.
func choosePause(root string) (string, error) {
	if podmanHas(e2ePause) {
		return e2ePause, nil
	}
	if !podmanHas(ownPause) {
		if err := buildPause(root, ownPause); err != nil {
			return "", err
		}
	}
	return ownPause, nil
}

// buildPause builds hack/cluster/pause (a static binary that sleeps until
// SIGTERM and reaps children) into a FROM scratch image.
func buildPause(root, tag string) error {
	dir, err := os.MkdirTemp("", "itm-pause-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "pause"), "./hack/cluster/pause")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the pause binary: %w: %s", err, out)
	}
	containerfile := "FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT [\"/pause\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(containerfile), 0o644); err != nil {
		return err
	}
	return sh("podman", "build", "-q", "-t", tag, "-f", filepath.Join(dir, "Containerfile"), dir)
}

// loadImages is make cluster-load: import into the running cluster.
func loadImages(root string, cfg Config, images []string, required bool) error {
	if len(images) == 0 {
		return errors.New("no images given (make cluster-load IMAGES=\"a b\")")
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "env")); err != nil {
		return errors.New("no running cluster in this checkout (make cluster)")
	}
	b, err := findBins(root)
	if err != nil {
		return err
	}
	return importImages(b.ctr(), cfg, images, required)
}

// importImages saves each podman image as an OCI archive and imports it
// into containerd's k8s.io namespace; a missing image fails only if
// required.
func importImages(ctr string, cfg Config, images []string, required bool) error {
	seen := map[string]bool{}
	for _, img := range images {
		if seen[img] {
			continue
		}
		seen[img] = true
		if !podmanHas(img) {
			if required {
				return fmt.Errorf("podman has no image %s", img)
			}
			fmt.Printf("    (podman has no %s: not imported)\n", img)
			continue
		}
		archive := filepath.Join(cfg.Dir, "image.tar")
		_ = os.Remove(archive)
		if err := sh("podman", "save", "-q", "--format", "oci-archive", "-o", archive, img); err != nil {
			return err
		}
		err := sh(ctr, "-a", cfg.ContainerdSocket(), "-n", "k8s.io", "images", "import", archive)
		_ = os.Remove(archive)
		if err != nil {
			return err
		}
		out, err := output(ctr, "-a", cfg.ContainerdSocket(), "-n", "k8s.io", "images", "ls", "-q")
		if err != nil {
			return err
		}
		if !strings.Contains("\n"+out, "\n"+img+"\n") {
			return fmt.Errorf("imported %s but containerd lists only: %s", img, strings.Join(lines(out), ", "))
		}
		fmt.Printf("    imported %s\n", img)
	}
	return nil
}

// down signals the running cluster of this checkout and waits for it. A
// killed run's leftovers are cleaned up here too.
func down(cfg Config) error {
	pid := runningPID(cfg.Dir)
	if pid == 0 {
		if _, err := os.Stat(filepath.Join(cfg.Dir, "host.json")); err == nil {
			if err := needRoot("make cluster-down"); err != nil {
				return err
			}
			fmt.Println("==> No cluster running, but a killed run left state: cleaning up")
			return teardown(cfg, nil)
		}
		fmt.Println("No cluster of this checkout is running.")
		return nil
	}
	fmt.Printf("==> Stopping the cluster (pid %d)\n", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	t0 := time.Now()
	for alive(pid) {
		if time.Since(t0) > 5*time.Minute {
			return fmt.Errorf("the cluster (pid %d) did not stop within 5m; see .cluster/logs", pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	status, err := os.ReadFile(filepath.Join(cfg.Dir, "stop-status"))
	if err != nil {
		return fmt.Errorf("the cluster stopped without a stop status (killed?): %w", err)
	}
	fmt.Printf("==> Stopped in %.1fs: %s", time.Since(t0).Seconds(), status)
	if strings.TrimSpace(string(status)) != "ok" {
		return errors.New("the cluster did not stop cleanly (its output says what is left)")
	}
	return nil
}
