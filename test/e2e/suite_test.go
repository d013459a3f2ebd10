//go:build e2e

// Package e2e proves itmanager's promises on a real cluster (make cluster):
// the chart installed by make e2e with the local image, real Pods and
// kubelet, real upgrade Jobs and drains, and real packets stopped by the
// NetworkPolicies it writes (kube-router enforcing them). Test devices are
// network namespaces on the node's bridge running the real itmanager-agent
// binary against the check-in Service.
//
// It needs root on the node (network namespaces, the node's filesystem) and
// the cluster's .cluster/ directory (kubeconfig and env); without them it
// fails, never skips.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// leaseName is the manager's leader election Lease (main.go).
const leaseName = "itmanager.itmanager.io"

var (
	ctx    context.Context
	cancel context.CancelFunc
	scheme = runtime.NewScheme()
	// k8s is the cluster admin (.cluster/kubeconfig), able to watch.
	k8s    client.WithWatch
	config *rest.Config
	// cluster is .cluster/env (NODE_NAME, BRIDGE, POD_CIDR, SERVICE_CIDR,
	// DEVICE_CIDR, DEVICE_GATEWAY, ...).
	cluster map[string]string
	// Where make e2e installed the chart.
	repoRoot, clusterDir, valuesFile, releaseName, operatorNS string
	devicesNS, upgradesNS                                     string
	helmBin, kubectlBin                                       string
	// work holds the agent binary, device roots and logs (kept when a spec
	// failed).
	work     string
	agentBin string
	failed   atomic.Bool
	// Test images (make e2e-images; imported into containerd by make
	// cluster).
	probeImage, upgradeImage string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "E2E", Label("e2e"))
}

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		failed.Store(true)
	}
})

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	ctx, cancel = context.WithCancel(context.Background())
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(itmv1.AddToScheme(scheme)).To(Succeed())

	out, err := exec.Command("go", "env", "GOMOD").Output()
	Expect(err).NotTo(HaveOccurred())
	repoRoot = filepath.Dir(strings.TrimSpace(string(out)))
	clusterDir = env("E2E_CLUSTER_DIR", filepath.Join(repoRoot, ".cluster"))
	kubeconfig := env("KUBECONFIG", filepath.Join(clusterDir, "kubeconfig"))
	if _, err := os.Stat(kubeconfig); err != nil {
		Fail(fmt.Sprintf("no cluster: %s does not exist. Run make cluster (it writes .cluster/kubeconfig when the node is Ready) and make e2e, or point KUBECONFIG or E2E_CLUSTER_DIR at a running cluster", kubeconfig))
	}
	Expect(os.Geteuid()).To(BeZero(), "the e2e suite runs as root on the node: its devices are network namespaces")
	cluster = readEnv(filepath.Join(clusterDir, "env"))
	for _, k := range []string{"NODE_NAME", "BRIDGE", "POD_CIDR", "SERVICE_CIDR", "DEVICE_CIDR", "DEVICE_GATEWAY"} {
		Expect(cluster).To(HaveKey(k), "%s/env (make cluster) names %s", clusterDir, k)
	}
	valuesFile = env("E2E_VALUES", filepath.Join(clusterDir, "e2e-values.yaml"))
	releaseName = env("E2E_RELEASE", "itmanager")
	operatorNS = env("E2E_NAMESPACE", "itmanager-system")
	devicesNS = env("E2E_DEVICES_NAMESPACE", "itmanager-devices")
	upgradesNS = env("E2E_UPGRADES_NAMESPACE", "itmanager-upgrades")
	helmBin = env("HELM", filepath.Join(repoRoot, "bin", "helm-v3.22.0"))
	kubectlBin = env("KUBECTL", filepath.Join(repoRoot, "bin", "kubectl"))
	probeImage = env("E2E_PROBE_IMAGE", "localhost/itmanager-e2e-probe:dev")
	upgradeImage = env("E2E_UPGRADE_IMAGE", "localhost/itmanager-e2e-upgrade:dev")

	config, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	config.QPS, config.Burst = 50, 100
	k8s, err = client.NewWithWatch(config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() error {
		return k8s.List(ctx, &itmv1.DeviceList{}, client.Limit(1))
	}).WithTimeout(30*time.Second).Should(Succeed(), "the API server in %s answers and serves itmanager's CRDs (make e2e installs the chart first)", kubeconfig)

	work, err = os.MkdirTemp("", "itm-e2e-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(filepath.Join(work, "logs"), 0o755)).To(Succeed())
	GinkgoWriter.Printf("work directory %s (kept when a spec fails)\n", work)

	By("building the real agent from the checkout")
	agentBin = filepath.Join(work, "itmanager-agent")
	build := exec.Command("go", "build", "-o", agentBin, "./cmd/itmanager-agent")
	build.Dir = repoRoot
	b, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build ./cmd/itmanager-agent: %s", b)

	removeStaleDevices()
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if work != "" && !failed.Load() {
		_ = os.RemoveAll(work)
	}
})

// readEnv parses make cluster's KEY=value lines.
func readEnv(path string) map[string]string {
	GinkgoHelper()
	f, err := os.Open(path)
	Expect(err).NotTo(HaveOccurred(), "make cluster writes %s", path)
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out
}

// ip runs ip(8) and fails the spec with its output when it fails.
func ip(args ...string) {
	GinkgoHelper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "ip %s: %s", strings.Join(args, " "), out)
}

var nameSeq atomic.Int32

// uniqueName is unique within the run and across runs (the node keeps what
// an aborted run left).
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%s-%d", prefix, runID, nameSeq.Add(1))
}

var runID = fmt.Sprintf("%x", time.Now().Unix()%0xfffff)

// ignoreGone is for cleanups of objects a spec may have deleted.
func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// deleteAndWait deletes obj and waits until it is gone.
func deleteAndWait(obj client.Object) {
	GinkgoHelper()
	Expect(ignoreGone(k8s.Delete(ctx, obj, client.PropagationPolicy("Background")))).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)))
	}).WithTimeout(3*time.Minute).Should(BeTrue(), "%T %s deleted", obj, obj.GetName())
}
