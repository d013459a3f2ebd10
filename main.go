// Command manager runs the itmanager operator: its controllers, the
// admission webhook for checks CEL cannot express, metrics and health probes.
// It does not listen for devices: the check-in service is its own process
// (cmd/itmanager-checkin) under its own ServiceAccount; the manager enrols
// agents (token hashes on Leases, enrolment Secrets with the service's URL
// and CA) and issues and rotates the service's serving certificate.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	// Embedded IANA time zone data, so MaintenanceWindow time zones resolve
	// identically in a distroless image and on a developer's machine.
	_ "time/tzdata"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/informer"
	itmwebhook "github.com/itmanager-io/itmanager/internal/webhook"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(itmv1.AddToScheme(scheme))
}

// The metrics endpoint, when served securely, authenticates and authorizes
// every scrape against the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Leader election (in the operator namespace), events, and the check-in
// service's serving certificate (a Secret in the operator namespace). The
// namespaces in these markers are the defaults; the chart and make dev put
// the Roles where --operator-namespace and --devices-namespace point.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=itmanager-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=itmanager-system,resources=secrets,verbs=get;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=itmanager-system,resources=events,verbs=create;patch

func main() {
	var (
		metricsAddr          string
		metricsSecure        bool
		probeAddr            string
		enableLeaderElection bool
		leaderElectionNS     string
		leaseDuration        time.Duration
		renewDeadline        time.Duration
		retryPeriod          time.Duration
		enableWebhooks       bool
		webhookHost          string
		webhookPort          int
		webhookCertDir       string
		enableHTTP2          bool
		operatorNamespace    string
		devicesNamespace     string
		upgradesNamespace    string
		staleAfter           time.Duration
		lastCheckInRefresh   time.Duration
		checkinURL           string
		checkinCertSecret    string
		checkinCertHosts     string
		agentAddressCIDRs    string
		apiQPS               float64
		apiBurst             int
		workers              int
		bindableRoles        string
		clusterWideRoles     string
		pprofAddr            string
		externalAPIURL       string
		providerCheck        time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; \"0\" disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, authenticating and authorizing each scrape.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "Elect a leader so only one replica reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the operator namespace).")
	flag.DurationVar(&leaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a standby replica waits after the leader's last renewal before it takes the lead: the longest a dead leader leaves the controllers idle.")
	flag.DurationVar(&renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew its Lease before it gives up the lead and exits; less than --leader-elect-lease-duration.")
	flag.DurationVar(&retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often the leader renews and a standby tries to take the lead.")
	flag.BoolVar(&enableWebhooks, "enable-webhooks", true, "Serve the validating admission webhook.")
	flag.StringVar(&webhookHost, "webhook-host", "", "Address the webhook server binds to (default: all).")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key for the webhook server; reloaded when they change.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the metrics and webhook servers (off by default: CVE-2023-44487).")
	flag.StringVar(&operatorNamespace, "operator-namespace", envOr("POD_NAMESPACE", "itmanager-system"), "Namespace of the operator; it holds the leader election Lease, and Secrets referenced by AccountProviders resolve only here.")
	flag.StringVar(&devicesNamespace, "devices-namespace", "itmanager-devices", "Namespace of the per-device Leases and enrolment Secrets.")
	flag.StringVar(&upgradesNamespace, "upgrades-namespace", controllers.DefaultUpgradesNamespace, "Namespace where node upgrade Jobs run (Pod Security privileged, holding the ServiceAccount "+controllers.NodeUpgradeServiceAccount+"); the manager's Job rights are only there.")
	flag.DurationVar(&staleAfter, "checkin-stale-after", 5*time.Minute, "A device whose last check-in is older than this is CheckedIn=False.")
	flag.DurationVar(&lastCheckInRefresh, "last-checkin-refresh", 5*time.Minute, "Rewrite a Device's status.lastCheckIn at most this often while CheckedIn does not change (the Lease holds the live value).")
	flag.StringVar(&checkinURL, "checkin-url", "", "URL agents reach the check-in service at, written into enrolment Secrets (default https://itmanager-checkin.<operator namespace>.svc).")
	flag.StringVar(&checkinCertSecret, "checkin-cert-secret", "", "Secret in the operator namespace with tls.crt, tls.key (and ca.crt) for the check-in service; when empty the manager issues and rotates a self-signed one in itmanager-checkin-tls.")
	flag.StringVar(&checkinCertHosts, "checkin-cert-hosts", "", "Comma-separated DNS names and IPs of the self-signed check-in certificate (default: the host of --checkin-url).")
	flag.StringVar(&agentAddressCIDRs, "agent-address-cidrs", "", "Comma-separated CIDRs that device addresses, reported and static (spec.addresses), must fall in to count (default: any); give the check-in service the same.")
	flag.Float64Var(&apiQPS, "kube-api-qps", 200, "Client-side rate limit of the controllers' API requests per second.")
	flag.IntVar(&apiBurst, "kube-api-burst", 400, "Burst above --kube-api-qps.")
	flag.IntVar(&workers, "workers", 16, "Concurrent reconciles per controller (they wait on the API server, not the CPU).")
	flag.StringVar(&bindableRoles, "bindable-cluster-roles", strings.Join(controllers.DefaultBindableRoles, ","), "Comma-separated ClusterRoles AccessPolicies may bind; the manager's RBAC must grant \"bind\" on exactly these.")
	flag.StringVar(&clusterWideRoles, "cluster-wide-roles", strings.Join(controllers.DefaultClusterWideRoles, ","), "Comma-separated ClusterRoles a kubernetesAccess entry without namespaces binds by a ClusterRoleBinding; any other bindable role is bound by a RoleBinding in every namespace but kube-* and itmanager's own.")
	flag.StringVar(&externalAPIURL, "external-api-url", "", "API server URL written into the kubeconfigs Kubernetes AccountProviders issue (default: the URL the manager itself uses).")
	flag.DurationVar(&providerCheck, "account-provider-check-interval", 5*time.Minute, "How often each AccountProvider's connectivity is checked again; an unreachable one sooner, after as long as it has been failing (from 1s up to this).")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "Address of the Go profiling endpoints (net/http/pprof); \"0\" disables them.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	if limit := setMemoryLimit(); limit > 0 {
		log.Info("Following the container memory limit", "goMemLimit", limit)
	}

	if checkinURL == "" {
		checkinURL = fmt.Sprintf("https://itmanager-checkin.%s.svc", operatorNamespace)
	}
	cidrs, err := device.ParseRanges(agentAddressCIDRs)
	if err != nil {
		log.Error(err, "Invalid --agent-address-cidrs")
		os.Exit(1)
	}
	certHosts, err := certificateHosts(checkinCertHosts, checkinURL)
	if err != nil {
		log.Error(err, "Invalid --checkin-url or --checkin-cert-hosts")
		os.Exit(1)
	}

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	metricsOpts := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: metricsSecure,
		TLSOpts:       tlsOpts,
	}
	if metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if leaderElectionNS == "" {
		leaderElectionNS = operatorNamespace
	}

	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(apiQPS), apiBurst
	var leaderLock *resourcelock.LeaseLock
	if enableLeaderElection {
		if retryPeriod >= renewDeadline || renewDeadline >= leaseDuration {
			log.Error(nil, "Need --leader-elect-retry-period < --leader-elect-renew-deadline < --leader-elect-lease-duration",
				"retryPeriod", retryPeriod, "renewDeadline", renewDeadline, "leaseDuration", leaseDuration)
			os.Exit(1)
		}
		if leaderLock, err = newLeaderLock(restConfig, leaderElectionNS, renewDeadline); err != nil {
			log.Error(err, "Unable to set up leader election")
			os.Exit(1)
		}
		log.Info("Leader election", "lease", leaderElectionNS+"/"+leaderElectionID, "identity", leaderLock.Identity(),
			"leaseDuration", leaseDuration, "renewDeadline", renewDeadline, "retryPeriod", retryPeriod)
	}
	mgrOpts := ctrl.Options{
		Scheme: scheme,
		Cache: cache.Options{
			ByObject:         controllers.CacheByObject(devicesNamespace, upgradesNamespace),
			DefaultTransform: cache.TransformStripManagedFields(),
			// Back within a second of an API server restart, not after
			// the reflector's backoff (internal/informer).
			NewInformer: informer.New,
		},
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: leaderElectionNS,
		LeaseDuration:           &leaseDuration,
		RenewDeadline:           &renewDeadline,
		RetryPeriod:             &retryPeriod,
		// The manager exits right after losing leadership, so stepping down
		// early on SIGTERM is safe and lets a new leader start at once.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    webhookHost,
			Port:    webhookPort,
			CertDir: webhookCertDir,
			TLSOpts: tlsOpts,
		}),
	}
	if leaderLock != nil {
		mgrOpts.LeaderElectionResourceLockInterface = leaderLock
	}
	mgr, err := ctrl.NewManager(restConfig, mgrOpts)
	if err != nil {
		log.Error(err, "Unable to create manager")
		os.Exit(1)
	}
	if leaderLock != nil {
		// "<identity> became leader" Events on the Lease, as
		// controller-runtime's own lock records them.
		leaderLock.LockConfig.EventRecorder = mgr.GetEventRecorderFor(leaderLock.Identity()) //nolint:staticcheck // resourcelock takes the old recorder
	}

	ctx := ctrl.SetupSignalHandler()
	clk := clock.RealClock{}
	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		log.Error(err, "Unable to set up field indexes")
		os.Exit(1)
	}
	if err := (&controllers.DeviceReconciler{
		Client: mgr.GetClient(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-device"),
		DevicesNamespace: devicesNamespace, StaleAfter: staleAfter, RefreshEvery: lastCheckInRefresh, Workers: workers,
		AddressRanges: cidrs,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "Device")
		os.Exit(1)
	}
	if err := (&controllers.AccessPolicyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-access"),
		OperatorNamespace: operatorNamespace, DevicesNamespace: devicesNamespace, BindableRoles: splitList(bindableRoles), Workers: workers,
		UpgradesNamespace: upgradesNamespace, ClusterWideRoles: append([]string{}, splitList(clusterWideRoles)...),
		AddressRanges: cidrs,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "AccessPolicy")
		os.Exit(1)
	}
	if err := (&controllers.MaintenanceWindowReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-maintenance"),
		UpgradesNamespace: upgradesNamespace, Workers: workers,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "MaintenanceWindow")
		os.Exit(1)
	}
	if err := (&controllers.NodeDiscoveryReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("itmanager-node-discovery"), Workers: workers}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "NodeDiscovery")
		os.Exit(1)
	}

	apiServer, apiCA, err := apiServerFor(restConfig, externalAPIURL)
	if err != nil {
		log.Error(err, "Unable to read the API server's CA")
		os.Exit(1)
	}
	providers := &controllers.Providers{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Clock: clk,
		OperatorNamespace: operatorNamespace, DevicesNamespace: devicesNamespace, APIServer: apiServer, APIServerCA: apiCA,
	}
	if err := (&controllers.AccountProviderReconciler{
		Client: mgr.GetClient(), Providers: providers, Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-accountprovider"), CheckEvery: providerCheck,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "AccountProvider")
		os.Exit(1)
	}
	if err := (&controllers.OnboardingReconciler{
		Client: mgr.GetClient(), Providers: providers, Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-onboarding"), Workers: workers,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "Onboarding")
		os.Exit(1)
	}

	certSecret := types.NamespacedName{Namespace: operatorNamespace, Name: checkinCertSecret}
	if checkinCertSecret == "" {
		certSecret.Name = "itmanager-checkin-tls"
		if err := mgr.Add(&checkin.Rotator{
			Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Secret: certSecret, Hosts: certHosts, Clock: clk,
			Log: ctrl.Log.WithName("checkin-cert"), Every: time.Hour,
		}); err != nil {
			log.Error(err, "Unable to add the check-in certificate rotator")
			os.Exit(1)
		}
	}
	certs := &checkin.CertLoader{Reader: mgr.GetAPIReader(), Secret: certSecret, Clock: clk, Refresh: time.Minute}
	if err := (&controllers.EnrolmentReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("itmanager-enrolment"),
		DevicesNamespace: devicesNamespace, URL: checkinURL, CA: certs.CA, Workers: workers,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to create controller", "controller", "Enrolment")
		os.Exit(1)
	}
	if enableWebhooks {
		if err := (&itmwebhook.MaintenanceWindowValidator{}).SetupWithManager(mgr); err != nil {
			log.Error(err, "Unable to create webhook", "webhook", "MaintenanceWindow")
			os.Exit(1)
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up health check")
		os.Exit(1)
	}
	readyz := healthz.Ping
	if enableWebhooks {
		// Ready only once the webhook server serves, so a Service never sends
		// an admission request to a replica that cannot answer it.
		readyz = mgr.GetWebhookServer().StartedChecker()
	}
	if err := mgr.AddReadyzCheck("readyz", readyz); err != nil {
		log.Error(err, "Unable to set up ready check")
		os.Exit(1)
	}

	log.Info("Starting manager", "operatorNamespace", operatorNamespace, "devicesNamespace", devicesNamespace, "upgradesNamespace", upgradesNamespace, "checkinURL", checkinURL)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager exited with an error")
		os.Exit(1)
	}
}

// leaderElectionID names the leader election Lease in the operator namespace.
const leaderElectionID = "itmanager.itmanager.io"

// newLeaderLock is the Lease lock controller-runtime would make, except
// for the identity: $POD_NAME (the chart sets it; a Pod's hostname is the
// same name) or else the hostname, then a unique suffix, so the Lease's
// holderIdentity names the replica that leads even when several run on one
// host (make dev, the fault tests).
func newLeaderLock(cfg *rest.Config, namespace string, renewDeadline time.Duration) (*resourcelock.LeaseLock, error) {
	name := os.Getenv("POD_NAME")
	if name == "" {
		var err error
		if name, err = os.Hostname(); err != nil {
			return nil, err
		}
	}
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	// One hung request must not cost the lead: as controller-runtime does.
	cfg.Timeout = max(renewDeadline/2, time.Second)
	coordination, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: leaderElectionID},
		Client:     coordination,
		LockConfig: resourcelock.ResourceLockConfig{Identity: name + "_" + string(uuid.NewUUID())},
	}, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// setMemoryLimit sets the Go runtime's soft memory limit to 90% of the
// container's cgroup v2 memory limit, unless GOMEMLIMIT is set, so the
// garbage collector works harder before the kernel would kill the manager.
// It returns the limit set (0: none).
func setMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	data, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || limit <= 0 { // "max": no limit
		return 0
	}
	limit = limit / 10 * 9
	debug.SetMemoryLimit(limit)
	return limit
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// certificateHosts are the names of the self-signed check-in certificate.
func certificateHosts(hosts, checkinURL string) ([]string, error) {
	if out := splitList(hosts); len(out) > 0 {
		return out, nil
	}
	u, err := url.Parse(checkinURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("--checkin-url %q must be an https:// URL", checkinURL)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip == nil && strings.HasSuffix(host, ".svc") {
		// Agents inside the cluster may also use the fully qualified name.
		return []string{host, host + ".cluster.local"}, nil
	}
	return []string{host}, nil
}

// apiServerFor is the API server URL and CA that issued kubeconfigs carry:
// external (when set) or the manager's own.
func apiServerFor(cfg *rest.Config, external string) (string, []byte, error) {
	server := cfg.Host
	if external != "" {
		server = external
	}
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return "", nil, err
		}
	}
	return server, ca, nil
}
