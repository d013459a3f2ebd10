// Command dev is `make dev`: a local itmanager on a control plane built from
// source. It starts etcd, kube-apiserver and kube-controller-manager on
// loopback, installs the CRDs and the validating webhook (served by the
// manager at https://127.0.0.1:<port> with a certificate for that IP), runs
// the manager from main.go as its own ServiceAccount under the ClusterRole
// generated from the RBAC markers (not as admin, so a missing marker shows),
// runs the check-in service (cmd/itmanager-checkin) as its own process
// under its own ServiceAccount with exactly config/rbac/checkin_role.yaml,
// serving the certificate the manager issued from files (as a Secret volume
// would give it), applies config/samples, and only then writes the admin
// kubeconfig .dev/kubeconfig. SIGINT or SIGTERM stops every process it
// started.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

const (
	operatorNamespace = testenv.OperatorNamespace
	devicesNamespace  = testenv.DevicesNamespace
	serviceAccount    = testenv.ManagerServiceAccount
	checkinAccount    = testenv.CheckinServiceAccount
	fieldManager      = "itmanager-dev"
)

func main() {
	// Stop like on SIGTERM when the parent (make) goes away without
	// passing a signal on, so no control plane is ever left behind.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		fmt.Fprintf(os.Stderr, "make dev: prctl(PR_SET_PDEATHSIG): %v\n", errno)
	}
	if os.Getppid() == 1 {
		fmt.Fprintln(os.Stderr, "make dev: started without a parent; refusing to run unattended")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "make dev: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	devDir := filepath.Join(root, ".dev")
	logDir := filepath.Join(devDir, "logs")
	adminKubeconfig := filepath.Join(devDir, "kubeconfig")
	if err := claim(devDir); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(devDir, "pid"))
	defer os.Remove(adminKubeconfig)
	// A kubeconfig from an earlier run points at a dead server; nobody may
	// read it as a sign that this run is ready.
	_ = os.Remove(adminKubeconfig)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	step("Starting etcd, kube-apiserver and kube-controller-manager (logs in .dev/logs)")
	env, err := testenv.Start(testenv.Options{Webhooks: true, ControllerManager: true, AdmissionPolicies: true, LogDir: logDir})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the control plane")
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "make dev: stopping the control plane: %v\n", err)
		}
	}()
	admin, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return err
	}

	step("Granting the manager its generated RBAC (config/rbac/role.yaml) as ServiceAccount " + operatorNamespace + "/" + serviceAccount)
	managerConfig, err := env.ManagerConfig(ctx)
	if err != nil {
		return err
	}
	managerKubeconfig := filepath.Join(devDir, "manager.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(managerKubeconfig, managerConfig, serviceAccount); err != nil {
		return err
	}
	defer os.Remove(managerKubeconfig)

	step("Building and starting the manager (main.go) under that ServiceAccount")
	ports, err := testenv.FreePorts(4)
	if err != nil {
		return err
	}
	checkinURL := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	cmd, probeAddr, err := startManager(root, logDir, managerKubeconfig, env, ports[0], ports[1], checkinURL)
	if err != nil {
		return err
	}
	manager := watch(cmd)
	defer manager.stop("manager")
	if err := waitReady(ctx, "http://"+probeAddr+"/readyz", manager); err != nil {
		return fmt.Errorf("manager did not become ready (see .dev/logs/manager.log): %w", err)
	}

	step("Granting the check-in service its RBAC (config/rbac/checkin_role.yaml) as ServiceAccount " + operatorNamespace + "/" + checkinAccount)
	checkinConfig, err := env.CheckinConfig(ctx)
	if err != nil {
		return err
	}
	checkinKubeconfig := filepath.Join(devDir, "checkin.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(checkinKubeconfig, checkinConfig, checkinAccount); err != nil {
		return err
	}
	defer os.Remove(checkinKubeconfig)
	// The kubelet's part: the Secret the manager issues, as files the
	// check-in service reloads (its ServiceAccount may not read Secrets).
	tlsDir := filepath.Join(devDir, "checkin-tls")
	defer os.RemoveAll(tlsDir)
	certSecret := types.NamespacedName{Namespace: operatorNamespace, Name: "itmanager-checkin-tls"}
	if err := testenv.MountSecret(ctx, admin, certSecret, tlsDir, time.Minute, 30*time.Second); err != nil {
		return err
	}
	step("Building and starting the check-in service (cmd/itmanager-checkin) under that ServiceAccount")
	cmd, checkinProbe, err := startCheckin(root, logDir, checkinKubeconfig, tlsDir, ports[2], ports[3])
	if err != nil {
		return err
	}
	checkinProc := watch(cmd)
	defer checkinProc.stop("check-in service")
	if err := waitReady(ctx, "http://"+checkinProbe+"/readyz", checkinProc); err != nil {
		return fmt.Errorf("check-in service did not become ready (see .dev/logs/checkin.log): %w", err)
	}

	// The Node comes first: the sample node-worker-1 only adds labels and a
	// target version to the Device discovery creates, and discovery never
	// adopts a Device of that name that it did not create.
	step("Registering Node worker-1 and simulating its kubelet's Lease")
	if err := simulateNode(ctx, admin, "worker-1"); err != nil {
		return err
	}
	if err := waitDiscovered(ctx, admin, "worker-1"); err != nil {
		return err
	}
	step("Applying config/samples")
	if err := applySamples(ctx, root, admin); err != nil {
		return err
	}

	if err := writeAdminKubeconfig(adminKubeconfig, env); err != nil {
		return err
	}
	printNextSteps(env.Config.Host, checkinURL)

	select {
	case <-ctx.Done():
		fmt.Println()
		step("Interrupted; stopping everything")
	case <-manager.done:
		return fmt.Errorf("the manager exited, see .dev/logs/manager.log: %w", manager.err)
	case <-checkinProc.done:
		return fmt.Errorf("the check-in service exited, see .dev/logs/checkin.log: %w", checkinProc.err)
	}
	return nil
}

func step(msg string) { fmt.Printf("==> %s\n", msg) }

// claim refuses to start a second `make dev` in the same checkout: both
// would write .dev/kubeconfig.
func claim(devDir string) error {
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(devDir, "pid")
	if data, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != os.Getpid() {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("make dev is already running in this checkout (pid %d)", pid)
			}
		}
	}
	return os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func writeAdminKubeconfig(path string, env *testenv.Environment) error {
	cfg, err := clientcmd.Load(env.KubeConfig)
	if err != nil {
		return err
	}
	return testenv.WriteKubeconfig(path, cfg)
}

func startManager(root, logDir, kubeconfig string, env *testenv.Environment, probePort, metricsPort int, checkinURL string) (*exec.Cmd, string, error) {
	bin := filepath.Join(root, "bin", "manager")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return nil, "", fmt.Errorf("build the manager: %w", err)
	}
	// The kubectl plugin too, so the tour's `kubectl itm` works with bin/ on the PATH.
	build = exec.Command("go", "build", "-o", filepath.Join(root, "bin", "kubectl-itm"), "./cmd/kubectl-itm")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return nil, "", fmt.Errorf("build the kubectl plugin: %w", err)
	}
	wh := env.WebhookInstallOptions
	probeAddr := fmt.Sprintf("127.0.0.1:%d", probePort)
	logFile, err := os.Create(filepath.Join(logDir, "manager.log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin,
		"--leader-elect",
		"--operator-namespace="+operatorNamespace,
		"--devices-namespace="+devicesNamespace,
		"--upgrades-namespace="+testenv.UpgradesNamespace,
		"--checkin-url="+checkinURL,
		"--health-probe-bind-address="+probeAddr,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort),
		"--webhook-host="+wh.LocalServingHost,
		fmt.Sprintf("--webhook-port=%d", wh.LocalServingPort),
		"--webhook-cert-dir="+wh.LocalServingCertDir,
		"--zap-devel",
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, so a terminal's Ctrl-C reaches only this program,
	// which stops the manager before the API server it talks to.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start the manager: %w", err)
	}
	return cmd, probeAddr, nil
}

// startCheckin builds and starts the check-in service on 127.0.0.1, with
// the kubeconfig of its own ServiceAccount and the serving certificate from
// tlsDir. It returns the address of its probes.
func startCheckin(root, logDir, kubeconfig, tlsDir string, port, probePort int) (*exec.Cmd, string, error) {
	bin := filepath.Join(root, "bin", "itmanager-checkin")
	build := exec.Command("go", "build", "-o", bin, "./cmd/itmanager-checkin")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return nil, "", fmt.Errorf("build the check-in service: %w", err)
	}
	probeAddr := fmt.Sprintf("127.0.0.1:%d", probePort)
	logFile, err := os.Create(filepath.Join(logDir, "checkin.log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin,
		fmt.Sprintf("--checkin-bind-address=127.0.0.1:%d", port),
		"--health-probe-bind-address="+probeAddr,
		"--metrics-bind-address=0",
		"--devices-namespace="+devicesNamespace,
		"--tls-cert-file="+filepath.Join(tlsDir, "tls.crt"),
		"--tls-key-file="+filepath.Join(tlsDir, "tls.key"),
		"--zap-devel",
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start the check-in service: %w", err)
	}
	return cmd, probeAddr, nil
}

func waitReady(ctx context.Context, url string, p *process) error {
	deadline := time.After(2 * time.Minute)
	for {
		resp, err := http.Get(url) //nolint:noctx // loopback readiness probe, bounded by the loop
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("exited: %w", p.err)
		case <-deadline:
			return errors.New("timed out after 2m")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// process is a child whose exit is observed by closing done.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid once done is closed
}

func watch(cmd *exec.Cmd) *process {
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) stop(name string) {
	select {
	case <-p.done:
		return
	default:
	}
	step("Stopping the " + name)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			fmt.Fprintf(os.Stderr, "make dev: the %s exited: %v\n", name, p.err)
		}
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "make dev: the %s did not stop within 15s; killing it\n", name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func applySamples(ctx context.Context, root string, admin client.Client) error {
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "itmanager_*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		objs, err := testenv.ReadObjects(f)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if err := admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply %s: %w", filepath.Base(f), err)
			}
			fmt.Printf("    %s/%s\n", strings.ToLower(obj.GetKind()), obj.GetName())
		}
	}
	return nil
}

// simulateNode registers a Node and renews its Lease in kube-node-lease every
// 10 seconds, as a kubelet would, so Node discovery and Node check-ins can be
// seen without a kubelet (none runs here: no Pod ever starts).
func simulateNode(ctx context.Context, admin client.Client, name string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	if err := admin.Create(ctx, node); err != nil {
		return fmt.Errorf("create Node %s: %w", name, err)
	}
	node.Status = corev1.NodeStatus{
		NodeInfo: corev1.NodeSystemInfo{OSImage: "Debian GNU/Linux 12 (bookworm)", KubeletVersion: "v1.36.3",
			OperatingSystem: "linux", Architecture: "amd64"},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}, {Type: corev1.NodeHostName, Address: name}},
	}
	if err := admin.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("set status of Node %s: %w", name, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-node-lease", Name: name},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: ptr.To[int32](40)},
	}
	renew := func() error {
		lease.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
		if lease.ResourceVersion == "" {
			return admin.Create(ctx, lease)
		}
		return admin.Update(ctx, lease)
	}
	if err := renew(); err != nil {
		return fmt.Errorf("create Lease of Node %s: %w", name, err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
				if err := renew(); err != nil && ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "make dev: renew the Lease of Node %s: %v\n", name, err)
				}
			}
		}
	}()
	return nil
}

// waitDiscovered waits until Node discovery created the Device of Node name
// (owned by it), so the samples never create that Device first.
func waitDiscovered(ctx context.Context, admin client.Client, name string) error {
	node := &corev1.Node{}
	if err := admin.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		return fmt.Errorf("get Node %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		dev := &unstructured.Unstructured{}
		dev.SetAPIVersion("itmanager.io/v1alpha1")
		dev.SetKind("Device")
		err := admin.Get(ctx, client.ObjectKey{Name: "node-" + name}, dev)
		if err == nil && metav1.IsControlledBy(dev, node) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node discovery did not create Device node-%s within 30s (see .dev/logs/manager.log): %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printNextSteps(host, checkinURL string) {
	k := "bin/kubectl --kubeconfig .dev/kubeconfig"
	fmt.Printf(`
itmanager is running.
  API server   %s (admin kubeconfig: .dev/kubeconfig)
  manager      runs as system:serviceaccount:%[2]s:%[3]s
  check-ins    %[5]s (run an agent: see docs/devices.md)
               served by cmd/itmanager-checkin as system:serviceaccount:%[2]s:%[6]s
  node         worker-1, a Node whose kubelet make dev simulates (its Lease is renewed every 10s)
  logs         .dev/logs/{manager,checkin,kube-apiserver,kube-controller-manager,etcd}.log

Try:
  %[4]s get itmanager
  %[4]s get devices -o wide
  %[4]s explain maintenancewindow.spec.windows
  %[4]s auth can-i --list --as=system:serviceaccount:%[2]s:%[3]s
  %[4]s auth can-i --list --as=system:serviceaccount:%[2]s:%[6]s -n %[7]s
  # The webhook rejects a schedule cron cannot run:
  %[4]s patch mw ring1-weekly-berlin --type=json -p='[{"op":"replace","path":"/spec/windows/0/schedule","value":"0 2 31 2 MON"}]'
  # A joiner waiting for approval (the README tour approves her):
  KUBECONFIG=.dev/kubeconfig bin/kubectl-itm status amara.okafor

Press Ctrl-C to stop everything.
`, host, operatorNamespace, serviceAccount, k, checkinURL, checkinAccount, devicesNamespace)
}
