package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/certexpiry"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/informer"
	"github.com/itmanager-io/itmanager/internal/testenv"
	itmwebhook "github.com/itmanager-io/itmanager/internal/webhook"
)

// The suite runs the manager's controllers in-process, authenticated as the
// manager's ServiceAccount with exactly the generated RBAC, and two replicas
// of the check-in service authenticated as the check-in ServiceAccount with
// exactly its hand-written RBAC, against a real API server and
// kube-controller-manager (for garbage collection).

const (
	// staleAfter is short so freshness transitions happen within a test.
	staleAfter = 3 * time.Second
	agentCIDR  = "10.0.0.0/8"
	// checkinMinInterval is the check-in service's --checkin-min-interval
	// here: short, so specs that check in several times stay quick; post
	// keeps check-ins of one device this far apart.
	checkinMinInterval = 300 * time.Millisecond
)

var (
	env    *testenv.Environment
	k8s    client.Client // admin
	ctx    context.Context
	cancel context.CancelFunc
	// checkinURL is the first replica of the check-in service,
	// checkinURL2 the second (the same service, its own process state).
	checkinURL  string
	checkinURL2 string
	// checkinReplicas serve checkinURL and checkinURL2, in that order; a
	// spec may stop and start them again.
	checkinReplicas []*checkinReplica
	httpClient      *http.Client
	// checkinCfg authenticates as the check-in service's ServiceAccount.
	checkinCfg *rest.Config
	// checkinTLSDir holds the check-in serving certificate as files.
	checkinTLSDir string
	// mwClock is the MaintenanceWindow controller's clock: real time plus
	// an offset the tests move to open and close windows.
	mwClock = &shiftClock{}
	// managerCache is what the manager's controllers read; tests wait on
	// it where they act faster than any agent could.
	managerCache client.Reader
	// managerCfg authenticates as the manager's ServiceAccount.
	managerCfg *rest.Config
	// metricsURL is the in-process manager's /metrics.
	metricsURL string
	// onbClock is the onboarding controller's clock (startDate, endDate).
	onbClock = &shiftClock{}
	// ldapServer is a real slapd on loopback for LDAP AccountProviders.
	ldapServer *testenv.LDAPServer
	// stopOnboarding stops the onboarding manager, which runs apart from
	// the rest so that a test can stop and restart it mid-provisioning.
	stopOnboarding func()
	// providerCheckEvery is the AccountProvider check interval of the
	// onboarding managers startOnboarding starts.
	providerCheckEvery = 5 * time.Second
)

// startOnboarding starts a manager running the onboarding and
// AccountProvider controllers under the manager's RBAC; wrap, when set,
// wraps the provider opener. It returns a stop function that waits for the
// manager to end.
func startOnboarding(wrap func(controllers.ProviderOpener, context.CancelFunc) controllers.ProviderOpener) func() {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Scheme:     testenv.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options{ByObject: controllers.CacheByObject(testenv.DevicesNamespace, testenv.UpgradesNamespace), NewInformer: informer.New},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	mctx, mcancel := context.WithCancel(ctx)
	Expect(controllers.SetupIndexes(mctx, mgr)).To(Succeed())
	var opener controllers.ProviderOpener = &controllers.Providers{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Clock: onbClock,
		OperatorNamespace: testenv.OperatorNamespace, DevicesNamespace: testenv.DevicesNamespace,
		APIServer: env.Config.Host, APIServerCA: env.Config.CAData,
	}
	if wrap != nil {
		opener = wrap(opener, mcancel)
	}
	Expect((&controllers.AccountProviderReconciler{
		Client: mgr.GetClient(), Providers: opener, Clock: onbClock, Recorder: mgr.GetEventRecorder("itmanager-accountprovider"), CheckEvery: providerCheckEvery,
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.OnboardingReconciler{
		Client: mgr.GetClient(), Providers: opener, Clock: onbClock, Recorder: mgr.GetEventRecorder("itmanager-onboarding"), Workers: 4,
	}).SetupWithManager(mgr)).To(Succeed())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	return func() {
		mcancel()
		<-done
	}
}

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers", Label("integration"))
}

func freePort() int {
	ports, err := testenv.FreePorts(1)
	Expect(err).NotTo(HaveOccurred())
	return ports[0]
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Eventually waits up to 10 s unless a spec says otherwise: a loaded CI
	// machine is slower, never more right. Bounds that matter (an address
	// withdrawn within 2 s of expiry) are asserted on measured times.
	SetDefaultEventuallyTimeout(10 * time.Second)
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	// Webhooks: the MaintenanceWindow webhook (cron, time zone) is served by
	// the manager below, as in a real installation.
	env, err = testenv.Start(testenv.Options{ControllerManager: true, AdmissionPolicies: true, Webhooks: true})
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(env.Config, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	managerCfg, err = env.ManagerConfig(ctx)
	Expect(err).NotTo(HaveOccurred())
	ldapServer, err = testenv.StartLDAP(testenv.LDAPOptions{})
	Expect(err).NotTo(HaveOccurred())

	// The manager serves /metrics (plain HTTP here) so a spec can scrape
	// what a Prometheus would (metrics_test.go).
	metricsPort := freePort()
	for metricsPort == env.WebhookInstallOptions.LocalServingPort {
		metricsPort = freePort()
	}
	metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Scheme:  testenv.Scheme,
		Metrics: metricsserver.Options{BindAddress: fmt.Sprintf("127.0.0.1:%d", metricsPort)},
		Cache:   cache.Options{ByObject: controllers.CacheByObject(testenv.DevicesNamespace, testenv.UpgradesNamespace), NewInformer: informer.New},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: env.WebhookInstallOptions.LocalServingHost, Port: env.WebhookInstallOptions.LocalServingPort,
			CertDir: env.WebhookInstallOptions.LocalServingCertDir,
		}),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(controllers.SetupIndexes(ctx, mgr)).To(Succeed())
	Expect((&itmwebhook.MaintenanceWindowValidator{}).SetupWithManager(mgr)).To(Succeed())
	managerCache = mgr.GetCache()

	clk := clock.RealClock{}
	ports, err := testenv.FreePorts(2)
	// The webhook server binds its port only when the manager starts: a
	// port free now may be that one.
	for err == nil && slices.Contains(ports, env.WebhookInstallOptions.LocalServingPort) {
		ports, err = testenv.FreePorts(2)
	}
	Expect(err).NotTo(HaveOccurred())
	checkinURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	checkinURL2 = fmt.Sprintf("https://127.0.0.1:%d", ports[1])
	certSecret := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "itmanager-checkin-tls"}
	Expect(mgr.Add(&checkin.Rotator{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Secret: certSecret,
		Hosts: []string{"127.0.0.1"}, Clock: clk, Log: ctrl.Log.WithName("rotator"), Every: time.Hour})).To(Succeed())
	certs := &checkin.CertLoader{Reader: mgr.GetAPIReader(), Secret: certSecret, Clock: clk, Refresh: time.Minute}
	// As the manager's components wire them (components.go).
	Expect(controllers.RegisterInventory(mgr.GetCache())).To(Succeed())
	Expect(ctrlmetrics.Registry.Register(&certexpiry.Collector{Sources: map[string]certexpiry.Source{
		"webhook": certexpiry.File(filepath.Join(env.WebhookInstallOptions.LocalServingCertDir, "tls.crt")),
		"checkin": func() (*x509.Certificate, error) { return certs.Leaf(ctx) },
	}})).To(Succeed())

	Expect((&controllers.DeviceReconciler{
		Client: mgr.GetClient(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-device"),
		DevicesNamespace: testenv.DevicesNamespace, StaleAfter: staleAfter, RefreshEvery: 5 * time.Minute,
		AddressRanges: mustPrefixes(agentCIDR, "fd00::/8"),
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.NodeDiscoveryReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("itmanager-node-discovery")}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.MaintenanceWindowReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: mwClock, Recorder: mgr.GetEventRecorder("itmanager-maintenance"),
		UpgradesNamespace: testenv.UpgradesNamespace, Workers: 4, DrainPoll: 300 * time.Millisecond,
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.AccessPolicyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-access"),
		OperatorNamespace: testenv.OperatorNamespace, DevicesNamespace: testenv.DevicesNamespace,
		BindableRoles: controllers.DefaultBindableRoles, Workers: 4, AddressRanges: mustPrefixes(agentCIDR, "fd00::/8"),
	}).SetupWithManager(mgr)).To(Succeed())
	Expect((&controllers.EnrolmentReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("itmanager-enrolment"),
		DevicesNamespace: testenv.DevicesNamespace, URL: checkinURL, CA: certs.CA,
	}).SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()

	// The check-in service: as cmd/itmanager-checkin runs it, under its own
	// ServiceAccount, serving the certificate the manager issued from files
	// (written here as the kubelet writes a Secret volume).
	checkinCfg, err = env.CheckinConfig(ctx)
	Expect(err).NotTo(HaveOccurred())
	checkinTLSDir = GinkgoT().TempDir()
	Expect(testenv.MountSecret(ctx, k8s, certSecret, checkinTLSDir, time.Minute, 10*time.Second)).To(Succeed())
	for i, port := range ports {
		checkinReplicas = append(checkinReplicas, startCheckin(fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("checkin-%d", i), checkinMinInterval, 16))
	}

	stopOnboarding = startOnboarding(nil)

	// Agents trust the CA from the certificate Secret, as their enrolment
	// Secret hands it to them.
	var ca []byte
	Eventually(func() error {
		var err error
		ca, err = certs.CA(ctx)
		return err
	}).WithTimeout(30 * time.Second).Should(Succeed())
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
	httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	for _, u := range []string{checkinURL, checkinURL2} {
		Eventually(func() error {
			resp, err := httpClient.Get(u + "/healthz")
			if err != nil {
				return err
			}
			return resp.Body.Close()
		}).WithTimeout(30 * time.Second).Should(Succeed())
	}
})

// startCheckin runs one replica of the check-in service on addr with the
// check-in ServiceAccount's credentials and nothing else, until the suite
// ends or a spec stops it.
func startCheckin(addr, name string, minInterval time.Duration, maxInFlight int) *checkinReplica {
	GinkgoHelper()
	r := &checkinReplica{addr: addr, name: name, minInterval: minInterval, maxInFlight: maxInFlight}
	r.Start()
	return r
}

// checkinReplica is one in-process replica of the check-in service.
type checkinReplica struct {
	addr, name  string
	minInterval time.Duration
	maxInFlight int
	// stop ends its HTTP server and waits until it is closed; nil while
	// stopped.
	stop func()
}

// Start serves on the replica's address with a new server (no state kept
// from before, as a restarted Pod), once it accepts connections.
func (r *checkinReplica) Start() {
	GinkgoHelper()
	Expect(r.stop).To(BeNil(), "check-in replica %s is running", r.name)
	rctx, rcancel := context.WithCancel(ctx)
	cl, err := client.New(checkinCfg, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	certs, err := certwatcher.New(filepath.Join(checkinTLSDir, "tls.crt"), filepath.Join(checkinTLSDir, "tls.key"))
	Expect(err).NotTo(HaveOccurred())
	go func() { _ = certs.Start(rctx) }()
	server := &checkin.Server{
		Reader: cl, Writer: cl, Clock: clock.RealClock{}, DevicesNamespace: testenv.DevicesNamespace,
		StaleAfter: staleAfter, Interval: time.Second, MinInterval: r.minInterval, MaxInFlight: r.maxInFlight,
		AddressCIDRs: mustPrefixes(agentCIDR, "fd00::/8"), Log: ctrl.Log.WithName(r.name),
	}
	started, done := make(chan struct{}), make(chan struct{})
	listener := &checkin.Listener{Addr: r.addr, Handler: server.Handler(), GetCertificate: certs.GetCertificate, Log: ctrl.Log.WithName(r.name),
		Started: func() { close(started) }}
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(listener.Start(rctx)).To(Succeed())
	}()
	select {
	case <-started:
	case <-done:
	case <-time.After(10 * time.Second):
		Fail("check-in replica " + r.name + " did not start listening within 10s")
	}
	r.stop = func() {
		rcancel()
		<-done
	}
}

// Stop closes the replica's HTTP server (in-flight check-ins drain for up
// to 10 s) and returns once nothing listens on its address.
func (r *checkinReplica) Stop() {
	GinkgoHelper()
	Expect(r.stop).NotTo(BeNil(), "check-in replica %s is stopped", r.name)
	r.stop()
	r.stop = nil
}

var _ = AfterSuite(func() {
	if stopOnboarding != nil {
		stopOnboarding()
	}
	if ldapServer != nil {
		Expect(ldapServer.Stop()).To(Succeed())
	}
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// shiftClock is the real clock moved by an offset.
type shiftClock struct{ offset atomic.Int64 }

func (c *shiftClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// setNow moves the clock so that it reads t now.
func (c *shiftClock) setNow(t time.Time) { c.offset.Store(int64(time.Until(t))) }
func (c *shiftClock) reset()             { c.offset.Store(0) }
