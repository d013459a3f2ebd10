// Package testenv starts the real control plane that hack/control-plane.sh
// builds from source (etcd and kube-apiserver through envtest, and, when a
// test needs garbage collection, namespace deletion, Jobs, default
// ServiceAccounts or the aggregated view/edit roles, kube-controller-manager)
// for integration tests.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// ControllerManagerControllers are the kube-controller-manager controllers a
// local control plane runs: those DESIGN §5 names, plus the disruption
// controller, without which no PodDisruptionBudget ever gets a status and
// every eviction of a pod it covers hangs, then fails, unlike in any real
// cluster. The node lifecycle controller is left out on purpose: with no
// kubelet it would taint every Node unreachable.
const ControllerManagerControllers = "garbagecollector,namespace,job,serviceaccount,clusterrole-aggregation,disruption"

// Scheme knows the built-in kinds and itmanager's.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(itmv1.AddToScheme(Scheme))
}

// RepoRoot is the directory holding the main module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module github.com/itmanager-io/itmanager\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no itmanager go.mod above the working directory")
		}
		dir = parent
	}
}

// BinaryDir is where the control-plane binaries are: $KUBEBUILDER_ASSETS when
// set (make test sets it), otherwise the versioned directory in bin/.
func BinaryDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
			return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s holds no control plane (make control-plane builds it; make test sets KUBEBUILDER_ASSETS): %w", dir, err)
		}
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, "hack", "control-plane.sh"), "--print").Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh --print: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		return "", fmt.Errorf("control plane not built in %s; run make control-plane: %w", dir, err)
	}
	return dir, nil
}

// Options selects what an Environment runs besides etcd and kube-apiserver.
type Options struct {
	// Webhooks installs config/webhook and serves it from the test process
	// (envtest generates the serving certificate for 127.0.0.1).
	Webhooks bool
	// ControllerManager runs kube-controller-manager with
	// ControllerManagerControllers.
	ControllerManager bool
	// AdmissionPolicies installs the ValidatingAdmissionPolicies of
	// config/admission, named as kustomize names them.
	AdmissionPolicies bool
	// LogDir, when set, receives etcd.log, kube-apiserver.log and
	// kube-controller-manager.log; otherwise they go to a temporary
	// directory (controller manager) or are discarded (etcd, API server).
	LogDir string
	// APIServerFlags are added to kube-apiserver's flags (for example the
	// benchmark's audit-policy-file and audit-log-path).
	APIServerFlags map[string]string
}

// Environment is a running control plane.
type Environment struct {
	*envtest.Environment
	Config *rest.Config

	kcm     *exec.Cmd
	kcmDone chan struct{}
	kcmDir  string
	kcmBin  string
	kcmLog  string
	logs    []*os.File
	// apiCertDir is kube-apiserver's certificate directory, owned here
	// rather than by envtest so that it outlives a restart.
	apiCertDir string
	policies   bool
}

// Start starts etcd, kube-apiserver with itmanager's CRDs installed, and
// whatever opts asks for.
func Start(opts Options) (*Environment, error) {
	if err := refuseInUnitRun("a control plane (etcd, kube-apiserver)"); err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := BinaryDir()
	if err != nil {
		return nil, err
	}
	env := &Environment{Environment: &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: bin,
		Scheme:                Scheme,
	}}
	if opts.Webhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            []string{filepath.Join(root, "config", "webhook")},
			LocalServingHost: "127.0.0.1",
		}
	}
	if opts.LogDir != "" {
		etcdLog, err := env.logFile(opts.LogDir, "etcd.log")
		if err != nil {
			return nil, err
		}
		apiLog, err := env.logFile(opts.LogDir, "kube-apiserver.log")
		if err != nil {
			env.closeLogs()
			return nil, err
		}
		env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
		env.ControlPlane.APIServer = &envtest.APIServer{Out: apiLog, Err: apiLog}
	}
	if env.ControlPlane.APIServer == nil {
		env.ControlPlane.APIServer = &envtest.APIServer{}
	}
	// envtest deletes a certificate directory it created itself when the
	// API server stops, and a restart would then come up with a new CA,
	// new client CA and new service account signing key, so that every
	// client certificate and bound token issued before stopped working. A
	// directory given to it is kept.
	if env.apiCertDir, err = os.MkdirTemp("", "itm-apiserver-"); err != nil {
		env.closeLogs()
		return nil, err
	}
	env.ControlPlane.APIServer.CertDir = env.apiCertDir
	for k, v := range opts.APIServerFlags {
		env.ControlPlane.APIServer.Configure().Set(k, v)
	}
	cfg, err := env.Environment.Start()
	if err != nil {
		env.closeLogs()
		_ = os.RemoveAll(env.apiCertDir)
		return nil, fmt.Errorf("start envtest with binaries from %s: %w", bin, err)
	}
	env.Config = cfg
	env.policies = opts.AdmissionPolicies
	if opts.AdmissionPolicies {
		if err := env.installAdmissionPolicies(); err != nil {
			_ = env.Stop()
			return nil, err
		}
		if err := env.waitForMutatingAdmission(90 * time.Second); err != nil {
			_ = env.Stop()
			return nil, err
		}
	}
	if opts.ControllerManager {
		if err := env.startControllerManager(bin, opts.LogDir); err != nil {
			_ = env.Stop()
			return nil, err
		}
	}
	return env, nil
}

func (e *Environment) logFile(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, f)
	return f, nil
}

func (e *Environment) closeLogs() {
	for _, f := range e.logs {
		_ = f.Close()
	}
	e.logs = nil
}

func (e *Environment) startControllerManager(bin, logDir string) error {
	admin, err := e.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add kube-controller-manager user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	if e.kcmDir, err = os.MkdirTemp("", "itm-kcm-"); err != nil {
		return err
	}
	path := filepath.Join(e.kcmDir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return err
	}
	if logDir == "" {
		logDir = e.kcmDir
	}
	logFile, err := e.logFile(logDir, "kube-controller-manager.log")
	if err != nil {
		return err
	}
	e.kcmBin, e.kcmLog = filepath.Join(bin, "kube-controller-manager"), logFile.Name()
	if err := e.runControllerManager(logFile); err != nil {
		return err
	}
	return e.waitForAggregatedRoles(60 * time.Second)
}

// runControllerManager starts the kube-controller-manager process with the
// kubeconfig in kcmDir, its output to out.
func (e *Environment) runControllerManager(out *os.File) error {
	e.kcm = exec.Command(e.kcmBin, ControllerManagerArgs(filepath.Join(e.kcmDir, "kubeconfig"))...)
	e.kcm.Stdout, e.kcm.Stderr = out, out
	// Never outlive the process that started it.
	e.kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := e.kcm.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	done := make(chan struct{})
	e.kcmDone = done
	go func(cmd *exec.Cmd) {
		_ = cmd.Wait()
		close(done)
	}(e.kcm)
	return nil
}

// ControllerManagerArgs are the kube-controller-manager flags for a local
// control plane whose admin kubeconfig is at kubeconfig.
func ControllerManagerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + ControllerManagerControllers,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--concurrent-gc-syncs=5",
		"--v=1",
	}
}

// waitForAggregatedRoles returns once clusterrole-aggregation has filled the
// built-in view role, the last of the controllers to become useful.
func (e *Environment) waitForAggregatedRoles(timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		role, err := cs.RbacV1().ClusterRoles().Get(ctx, "view", metav1.GetOptions{})
		if err == nil && len(role.Rules) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager did not aggregate the view ClusterRole within %s (see kube-controller-manager.log)", timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops everything Start started.
func (e *Environment) Stop() error {
	if e.kcm != nil && e.kcm.Process != nil {
		_ = e.kcm.Process.Kill()
		<-e.kcmDone
	}
	if e.kcmDir != "" {
		_ = os.RemoveAll(e.kcmDir)
	}
	err := e.Environment.Stop()
	if e.apiCertDir != "" {
		_ = os.RemoveAll(e.apiCertDir)
	}
	e.closeLogs()
	return err
}

// StopAPIServer ends the kube-apiserver process as the kubelet ends a
// static Pod's: SIGTERM, then, if it has not exited after grace, SIGKILL
// (its graceful shutdown waits up to a minute for open watches, which
// every controller holds). It returns once the process has exited. etcd
// keeps running with its data, and so does everything else:
// kube-controller-manager and every client see the API server gone.
func (e *Environment) StopAPIServer(grace time.Duration) error {
	pid, err := e.apiServerPID()
	if err != nil {
		return err
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal kube-apiserver: %w", err)
	}
	if !processEnds(pid, grace) {
		if err := proc.Signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill kube-apiserver: %w", err)
		}
		if !processEnds(pid, 10*time.Second) {
			return fmt.Errorf("kube-apiserver (pid %d) still runs 10s after SIGKILL", pid)
		}
	}
	// envtest saw its process exit: this only resets its state for Start.
	if err := e.ControlPlane.APIServer.Stop(); err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	return nil
}

// apiServerPID finds this Environment's kube-apiserver among the
// processes by its certificate directory (envtest does not expose the
// process it started).
func (e *Environment) apiServerPID() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := "--cert-dir=" + e.apiCertDir
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args, want) && !zombie(pid) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no running kube-apiserver with %s", want)
}

// processEnds waits up to timeout for pid to exit (a zombie has exited;
// envtest reaps it).
func processEnds(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if zombie(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// zombie reports whether pid is gone or has exited and awaits reaping.
func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the
	// last parenthesis.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return strings.HasPrefix(strings.TrimSpace(rest), "Z") || strings.HasPrefix(strings.TrimSpace(rest), "X")
}

// StartAPIServer starts kube-apiserver again after StopAPIServer: the same
// binary and flags, the same address and port, the same certificates (its
// serving CA, the client CA and the service account signing key, so every
// client certificate and bound token issued before still works) and the
// same etcd. It returns once the API server is ready and, when the
// Environment installed them, admits with itmanager's admission policies
// again (they are in etcd; the mutating one needs the CRD schema again,
// which takes a few seconds to be learned). A kube-controller-manager that
// exited meanwhile is started again.
func (e *Environment) StartAPIServer(timeout time.Duration) error {
	if err := e.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	if err := e.waitForReadyz(timeout); err != nil {
		return err
	}
	if e.policies {
		if err := e.waitForMutatingAdmission(timeout); err != nil {
			return err
		}
	}
	if e.kcm != nil {
		select {
		case <-e.kcmDone:
			out, err := os.OpenFile(e.kcmLog, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			e.logs = append(e.logs, out)
			if err := e.runControllerManager(out); err != nil {
				return err
			}
		default:
		}
	}
	return nil
}

// waitForReadyz returns once the API server answers /readyz with ok: its
// post-start hooks ran and its informers synced. (envtest's start waits
// for /healthz only.)
func (e *Environment) waitForReadyz(timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("/readyz answered %q", body)
			}
			return fmt.Errorf("kube-apiserver not ready within %s: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AdmissionPolicyFiles are the files config/admission/kustomization.yaml
// lists, in its order: the one list kustomize, make dev, the tests and the
// chart install.
func AdmissionPolicyFiles() ([]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "config", "admission")
	objs, err := ReadObjects(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if len(objs) != 1 {
		return nil, fmt.Errorf("%s/kustomization.yaml: want one document, got %d", dir, len(objs))
	}
	resources, _, err := unstructured.NestedStringSlice(objs[0].Object, "resources")
	if err != nil || len(resources) == 0 {
		return nil, fmt.Errorf("%s/kustomization.yaml: no resources list: %w", dir, err)
	}
	files := make([]string, 0, len(resources))
	for _, r := range resources {
		files = append(files, filepath.Join(dir, r))
	}
	return files, nil
}

// AdmissionPolicies reads every file of config/admission with the names
// kustomize gives them (prefix "itmanager-", also in a binding's policyName).
func AdmissionPolicies() ([]*unstructured.Unstructured, error) {
	files, err := AdmissionPolicyFiles()
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		o, err := ReadObjects(f)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	for _, o := range objs {
		o.SetName(NamePrefix + o.GetName())
		if ref, ok, _ := unstructured.NestedString(o.Object, "spec", "policyName"); ok {
			if err := unstructured.SetNestedField(o.Object, NamePrefix+ref, "spec", "policyName"); err != nil {
				return nil, err
			}
		}
	}
	return objs, nil
}

// waitForMutatingAdmission returns once the API server runs the
// MutatingAdmissionPolicy on OnboardingRequests (the only kind one matches).
// It needs the CRD's schema, which the API server's admission type converter
// learns by polling its own /openapi/v3 every 5 seconds: for up to that long
// after the CRD is established, or after the API server started, every
// create is refused with 503 "Resource kind ... not found"; and right after
// a start the policy plugins refuse everything until they have read the
// policies. A server-side dry run goes through admission and stores
// nothing: a probe accepted with the requester stamp shows the mutating
// policy in force (and the validating ones, which the same plugin
// machinery serves, read).
func (e *Environment) waitForMutatingAdmission(timeout time.Duration) error {
	admin, err := client.New(e.Config, client.Options{Scheme: Scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		probe := &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: "itmanager-admission-probe"},
			Spec: itmv1.OnboardingRequestSpec{Person: itmv1.Person{
				DisplayName: "Admission probe", Email: "probe@example.invalid"}},
		}
		err := admin.Create(ctx, probe, client.DryRunAll)
		if err == nil && probe.Annotations[itmv1.AnnotationRequestedBy] != "" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("the probe was admitted without the %s stamp", itmv1.AnnotationRequestedBy)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server's mutating admission did not stamp an OnboardingRequest within %s: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (e *Environment) installAdmissionPolicies() error {
	objs, err := AdmissionPolicies()
	if err != nil {
		return err
	}
	admin, err := client.New(e.Config, client.Options{Scheme: Scheme})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := admin.Create(context.Background(), o); err != nil {
			return fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}
