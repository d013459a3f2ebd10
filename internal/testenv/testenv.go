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
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

	kcm    *exec.Cmd
	kcmDir string
	logs   []*os.File
}

// Start starts etcd, kube-apiserver with itmanager's CRDs installed, and
// whatever opts asks for.
func Start(opts Options) (*Environment, error) {
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
	if len(opts.APIServerFlags) > 0 {
		if env.ControlPlane.APIServer == nil {
			env.ControlPlane.APIServer = &envtest.APIServer{}
		}
		for k, v := range opts.APIServerFlags {
			env.ControlPlane.APIServer.Configure().Set(k, v)
		}
	}
	cfg, err := env.Environment.Start()
	if err != nil {
		env.closeLogs()
		return nil, fmt.Errorf("start envtest with binaries from %s: %w", bin, err)
	}
	env.Config = cfg
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
	e.kcm = exec.Command(filepath.Join(bin, "kube-controller-manager"), ControllerManagerArgs(path)...)
	if logDir == "" {
		logDir = e.kcmDir
	}
	logFile, err := e.logFile(logDir, "kube-controller-manager.log")
	if err != nil {
		return err
	}
	e.kcm.Stdout, e.kcm.Stderr = logFile, logFile
	// Never outlive the process that started it.
	e.kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := e.kcm.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	return e.waitForAggregatedRoles(60 * time.Second)
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
		_ = e.kcm.Wait()
	}
	if e.kcmDir != "" {
		_ = os.RemoveAll(e.kcmDir)
	}
	err := e.Environment.Stop()
	e.closeLogs()
	return err
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

// waitForMutatingAdmission returns once the API server can run the
// MutatingAdmissionPolicy on OnboardingRequests (the only kind one matches).
// It needs the CRD's schema, which the API server's admission type converter
// learns by polling its own /openapi/v3 every 5 seconds: for up to that long
// after the CRD is established, every create is refused with 503 "Resource
// kind ... not found". A server-side dry run goes through admission and
// stores nothing, so it probes exactly that condition.
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
		if err == nil || !apierrors.IsServiceUnavailable(err) {
			// Any other answer (accepted, or refused on its merits) means
			// admission ran with the schema.
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server's mutating admission did not learn the OnboardingRequest schema within %s: %w", timeout, err)
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
