// Package faults proves that itmanager survives faults of its own
// processes: two real manager processes (the binary main.go builds) run
// with leader election as the chart runs them, each under the manager
// ServiceAccount's generated RBAC, next to the real check-in service
// process, a real kube-apiserver and kube-controller-manager and a real
// slapd; the leader is SIGKILLed mid-work and the webhook goes down with
// the managers. Only the absent kubelets (Node leases, upgrade Job pods)
// and agents (in-process, over real HTTPS check-ins) are simulated.
package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

// Leader election timing of both replicas: shorter than the defaults
// (15s/10s/2s) so three failovers stay within seconds; the renew deadline
// leaves the leader 4s to renew on a loaded machine.
const (
	leaseDuration = 6 * time.Second
	renewDeadline = 4 * time.Second
	retryPeriod   = 1 * time.Second
	// leaseName is the manager's leader election Lease (main.go).
	leaseName = "itmanager.itmanager.io"
	// agentInterval is how often the check-in service asks agents to check in.
	agentInterval = time.Second
)

var (
	ctx    context.Context
	cancel context.CancelFunc
	env    *testenv.Environment
	// k8s is an admin client that can watch.
	k8s  client.WithWatch
	ldap *testenv.LDAPServer
	// work holds the binaries, kubeconfigs and logs; logs stay when a
	// spec failed.
	work     string
	failed   atomic.Bool
	replicas []*replica
	checkinP *process
	// checkinURL is the check-in service; checkinCA the CA agents trust.
	checkinURL string
	checkinCA  []byte
)

func TestFaults(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Faults", Label("integration"))
}

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		failed.Store(true)
	}
})

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	work, err = os.MkdirTemp("", "itm-faults-")
	Expect(err).NotTo(HaveOccurred())
	logs := filepath.Join(work, "logs")
	Expect(os.MkdirAll(logs, 0o755)).To(Succeed())
	GinkgoWriter.Printf("logs in %s (kept when a spec fails)\n", logs)

	By("building the manager and the check-in service")
	root, err := testenv.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	for _, b := range [][2]string{{"manager", "."}, {"itmanager-checkin", "./cmd/itmanager-checkin"}} {
		build := exec.Command("go", "build", "-o", filepath.Join(work, b[0]), b[1])
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "go build %s: %s", b[1], out)
	}

	By("starting etcd, kube-apiserver (admission policies, the webhook) and kube-controller-manager, and slapd")
	env, err = testenv.Start(testenv.Options{Webhooks: true, ControllerManager: true, AdmissionPolicies: true, LogDir: logs})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	ldap, err = testenv.StartLDAP(testenv.LDAPOptions{LogDir: logs})
	Expect(err).NotTo(HaveOccurred())

	mcfg, err := env.ManagerConfig(ctx)
	Expect(err).NotTo(HaveOccurred())
	managerKubeconfig := filepath.Join(work, "manager.kubeconfig")
	Expect(testenv.WriteTokenKubeconfig(managerKubeconfig, mcfg, testenv.ManagerServiceAccount)).To(Succeed())
	ccfg, err := env.CheckinConfig(ctx)
	Expect(err).NotTo(HaveOccurred())
	checkinKubeconfig := filepath.Join(work, "checkin.kubeconfig")
	Expect(testenv.WriteTokenKubeconfig(checkinKubeconfig, ccfg, testenv.CheckinServiceAccount)).To(Succeed())

	ports, err := testenv.FreePorts(6)
	Expect(err).NotTo(HaveOccurred())
	checkinURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])

	By("starting two managers with leader election, as the chart's Deployment runs its replicas")
	wh := env.WebhookInstallOptions
	for i, name := range []string{"itmanager-manager-a", "itmanager-manager-b"} {
		replicas = append(replicas, &replica{
			name: name, kubeconfig: managerKubeconfig, bin: filepath.Join(work, "manager"),
			logPath: filepath.Join(logs, name+".log"), certDir: wh.LocalServingCertDir,
			webhookPort: ports[1+2*i], probePort: ports[2+2*i],
		})
	}
	// The webhook Service: the API server calls envtest's address, which
	// forwards to a replica that accepts the connection, as a Service's
	// endpoints would.
	Expect(serveWebhookService(fmt.Sprintf("%s:%d", wh.LocalServingHost, wh.LocalServingPort), replicas)).To(Succeed())
	for _, r := range replicas {
		r.start()
	}
	for _, r := range replicas {
		r.waitReady()
	}
	Expect(leader()).NotTo(BeNil())

	By("starting the check-in service under its own ServiceAccount, serving the certificate the leader issued")
	tlsDir := filepath.Join(work, "checkin-tls")
	certSecret := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "itmanager-checkin-tls"}
	Expect(testenv.MountSecret(ctx, k8s, certSecret, tlsDir, time.Minute, 10*time.Second)).To(Succeed())
	checkinCA, err = os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	Expect(err).NotTo(HaveOccurred())
	checkinProbe := fmt.Sprintf("127.0.0.1:%d", ports[5])
	checkinP = startProcess(filepath.Join(work, "itmanager-checkin"), filepath.Join(logs, "checkin.log"),
		[]string{"KUBECONFIG=" + checkinKubeconfig},
		"--checkin-bind-address="+strings.TrimPrefix(checkinURL, "https://"),
		"--health-probe-bind-address="+checkinProbe, "--metrics-bind-address=0",
		"--devices-namespace="+testenv.DevicesNamespace,
		"--tls-cert-file="+filepath.Join(tlsDir, "tls.crt"), "--tls-key-file="+filepath.Join(tlsDir, "tls.key"),
		"--agent-interval="+agentInterval.String(), "--checkin-min-interval=200ms")
	waitHTTP("http://"+checkinProbe+"/readyz", checkinP)
})

var _ = AfterSuite(func() {
	for _, r := range replicas {
		r.stop()
	}
	if checkinP != nil {
		checkinP.stop()
	}
	if ldap != nil {
		Expect(ldap.Stop()).To(Succeed())
	}
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
	if work != "" && !failed.Load() {
		_ = os.RemoveAll(work)
	}
})

// process is a child process whose end is observed.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startProcess(bin, logPath string, env []string, args ...string) *process {
	GinkgoHelper()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	// Never outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	p := &process{cmd: cmd, done: make(chan struct{}), log: log}
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to stop (SIGTERM) and kills it after 15s.
func (p *process) stop() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

func waitHTTP(url string, p *process) {
	GinkgoHelper()
	Eventually(func() error {
		if !p.running() {
			return StopTrying("the process exited; see its log in " + work)
		}
		resp, err := http.Get(url) //nolint:noctx // loopback probe, bounded by Eventually
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}).WithTimeout(time.Minute).Should(Succeed())
}

// replica is one manager Pod of the Deployment: the same binary, flags and
// ServiceAccount; POD_NAME makes its leader election identity.
type replica struct {
	name, kubeconfig, bin, logPath, certDir string
	webhookPort, probePort                  int
	p                                       *process
}

// managerArgs are the chart's (charts/itmanager/templates/deployment.yaml)
// with its default values, on loopback ports, plus the shorter lease.
func (r *replica) managerArgs() []string {
	return []string{
		"--leader-elect=true",
		"--operator-namespace=" + testenv.OperatorNamespace,
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", r.probePort),
		"--metrics-bind-address=0",
		"--webhook-host=127.0.0.1",
		fmt.Sprintf("--webhook-port=%d", r.webhookPort),
		"--webhook-cert-dir=" + r.certDir,
		"--zap-log-level=info",
		"--devices-namespace=" + testenv.DevicesNamespace,
		"--upgrades-namespace=" + testenv.UpgradesNamespace,
		"--checkin-url=" + checkinURL,
		"--checkin-stale-after=5m",
		"--bindable-cluster-roles=view,edit",
		"--cluster-wide-roles=view",
		"--account-provider-check-interval=5m",
		"--leader-elect-lease-duration=" + leaseDuration.String(),
		"--leader-elect-renew-deadline=" + renewDeadline.String(),
		"--leader-elect-retry-period=" + retryPeriod.String(),
	}
}

func (r *replica) start() {
	GinkgoHelper()
	r.p = startProcess(r.bin, r.logPath, []string{"KUBECONFIG=" + r.kubeconfig, "POD_NAME=" + r.name}, r.managerArgs()...)
}

func (r *replica) waitReady() {
	GinkgoHelper()
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", r.probePort), r.p)
}

func (r *replica) running() bool { return r.p != nil && r.p.running() }

func (r *replica) stop() {
	if r.p != nil {
		r.p.stop()
	}
}

// ensureBothRunning restarts a replica a previous spec killed or stopped,
// as the Deployment's kubelet would, and waits until a replica leads.
func ensureBothRunning() {
	GinkgoHelper()
	for _, r := range replicas {
		if !r.running() {
			r.start()
			r.waitReady()
		}
	}
	Expect(leader()).NotTo(BeNil())
}

// lease reads the leader election Lease.
func lease() *coordinationv1.Lease {
	l := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: leaseName}, l); err != nil {
		return nil
	}
	return l
}

func holder(l *coordinationv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// replicaOf is the running replica whose identity ("<POD_NAME>_<uuid>")
// holds the Lease.
func replicaOf(identity string) *replica {
	name, _, _ := strings.Cut(identity, "_")
	for _, r := range replicas {
		if r.name == name && r.running() {
			return r
		}
	}
	return nil
}

// leader waits until a running replica holds the Lease and returns it.
func leader() *replica {
	GinkgoHelper()
	var out *replica
	Eventually(func() *replica {
		out = replicaOf(holder(lease()))
		return out
	}).WithTimeout(time.Minute).ShouldNot(BeNil(), "no running replica holds the Lease")
	return out
}

// killLeader SIGKILLs the replica holding the Lease and returns a function
// that waits for the other to take over and reports how long it took, from
// the kill to the new holder's acquireTime.
func killLeader(old *replica) func() *replica {
	GinkgoHelper()
	return armKill(old)()
}

// armKill reads who leads now and returns the kill, so a spec can kill
// the instant something happens.
func armKill(old *replica) func() func() *replica {
	GinkgoHelper()
	id := holder(lease())
	Expect(replicaOf(id)).To(Equal(old), "the leader changed before the kill")
	return func() func() *replica {
		old.p.kill()
		killedAt := time.Now()
		lastRenew := killedAt
		if l := lease(); l != nil && holder(l) == id && l.Spec.RenewTime != nil {
			lastRenew = l.Spec.RenewTime.Time
		}
		GinkgoWriter.Printf("SIGKILLed the leader %s at %s\n", id, killedAt.Format(time.RFC3339Nano))
		return func() *replica {
			GinkgoHelper()
			var l *coordinationv1.Lease
			Eventually(func() string {
				l = lease()
				return holder(l)
			}).WithTimeout(4*leaseDuration).ShouldNot(Or(Equal(id), BeEmpty()), "nobody took over from %s", id)
			next := replicaOf(holder(l))
			Expect(next).NotTo(BeNil(), "the Lease is held by %s, not a running replica", holder(l))
			Expect(next).NotTo(Equal(old))
			acquired := time.Now()
			if l.Spec.AcquireTime != nil {
				acquired = l.Spec.AcquireTime.Time
			}
			AddReportEntry("takeover", fmt.Sprintf("%s took over %s after the SIGKILL, %s after the dead leader's last renewal (lease duration %s, retry period %s)",
				next.name, acquired.Sub(killedAt).Round(10*time.Millisecond), acquired.Sub(lastRenew).Round(10*time.Millisecond), leaseDuration, retryPeriod))
			return next
		}
	}
}

// serveWebhookService listens on addr and forwards each connection to the
// first replica (round robin) that accepts it, as a Service forwards to
// its ready endpoints; with none, it closes the connection.
func serveWebhookService(addr string, backends []*replica) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	DeferCleanup(func() { _ = l.Close() })
	var next atomic.Uint32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go func() {
				defer conn.Close()
				start := int(next.Add(1))
				for i := range backends {
					b := backends[(start+i)%len(backends)]
					up, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.webhookPort), time.Second)
					if err != nil {
						continue
					}
					defer up.Close()
					var wg sync.WaitGroup
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, _ = io.Copy(up, conn)
						if tc, ok := up.(*net.TCPConn); ok {
							_ = tc.CloseWrite()
						}
					}()
					_, _ = io.Copy(conn, up)
					if tc, ok := conn.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
					wg.Wait()
					return
				}
			}()
		}
	}()
	return nil
}

var nameSeq atomic.Int32

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, nameSeq.Add(1)) }

// ignoreGone is for cleanups of objects a spec may have deleted.
func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
