// Command manager runs the itmanager operator: its controllers, the
// admission webhook for checks CEL cannot express, metrics and health probes.
// It does not listen for devices: the check-in service is its own process
// (cmd/itmanager-checkin) under its own ServiceAccount; the manager enrols
// agents (token hashes on Leases, enrolment Secrets with the service's URL
// and CA) and issues and rotates the service's serving certificate.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	// Embedded IANA time zone data, so MaintenanceWindow time zones resolve
	// identically in a distroless image and on a developer's machine.
	_ "time/tzdata"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/informer"
	"github.com/itmanager-io/itmanager/internal/options"
	"github.com/itmanager-io/itmanager/internal/version"
	"github.com/itmanager-io/itmanager/internal/webhookcert"
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
	o := options.NewManager(os.Getenv)
	o.AddFlags(flag.CommandLine)
	flag.Parse()
	if o.ShowVersion {
		version.Print(os.Stdout, "manager")
		return
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Zap)))
	log := ctrl.Log.WithName("setup")
	if err := run(ctrl.SetupSignalHandler(), o, log); err != nil {
		log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

// run validates the flags, wires the manager and runs it until ctx ends.
func run(ctx context.Context, o *options.Manager, log logr.Logger) error {
	if err := o.Complete(); err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}
	if limit := setMemoryLimit(); limit > 0 {
		log.Info("Following the container memory limit", "goMemLimit", limit)
	}
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load the kubeconfig: %w", err)
	}
	restConfig.QPS, restConfig.Burst = float32(o.APIQPS), o.APIBurst
	mgr, err := newManager(restConfig, o, log)
	if err != nil {
		return err
	}
	if err := wire(ctx, mgr, o, restConfig); err != nil {
		return err
	}
	log.Info("Starting manager", "version", version.Version, "commit", version.Commit, "operatorNamespace", o.OperatorNamespace, "devicesNamespace", o.DevicesNamespace,
		"upgradesNamespace", o.UpgradesNamespace, "checkinURL", o.CheckinURL, "webhookCertSecret", o.WebhookCertSecret)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager exited: %w", err)
	}
	return nil
}

// managerOptions are the manager's own settings (servers, cache, leader
// election) from the flags.
func managerOptions(o *options.Manager) ctrl.Options {
	var tlsOpts []func(*tls.Config)
	if !o.EnableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   o.MetricsAddr,
		SecureServing: o.MetricsSecure,
		TLSOpts:       tlsOpts,
	}
	if o.MetricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return ctrl.Options{
		Scheme: scheme,
		Cache: cache.Options{
			ByObject:         controllers.CacheByObject(o.DevicesNamespace, o.UpgradesNamespace),
			DefaultTransform: cache.TransformStripManagedFields(),
			// Back within a second of an API server restart, not after
			// the reflector's backoff (internal/informer).
			NewInformer: informer.New,
		},
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.ProbeAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		LeaseDuration:           &o.LeaseDuration,
		RenewDeadline:           &o.RenewDeadline,
		RetryPeriod:             &o.RetryPeriod,
		// The manager exits right after losing leadership, so stepping down
		// early on SIGTERM is safe and lets a new leader start at once.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhookServer(o, webhook.NewServer(webhook.Options{
			Host:    o.WebhookHost,
			Port:    o.WebhookPort,
			CertDir: o.WebhookCertDir,
			TLSOpts: tlsOpts,
		})),
	}
}

// webhookServer is s, held back until the manager has written its rotated
// serving certificate when it rotates one (components wires the rotator).
func webhookServer(o *options.Manager, s webhook.Server) webhook.Server {
	if !o.WebhookCertRotation() {
		return s
	}
	return webhookcert.New(webhookcert.Options{
		Secret:            types.NamespacedName{Namespace: o.OperatorNamespace, Name: o.WebhookCertSecret},
		ServiceName:       o.WebhookServiceName,
		ConfigurationName: o.WebhookConfigurationName,
		CertDir:           o.WebhookCertDir,
		Log:               ctrl.Log.WithName("webhook-cert"),
	}).Server(s)
}

// newManager is the manager with our leader election lock, when elected.
func newManager(restConfig *rest.Config, o *options.Manager, log logr.Logger) (ctrl.Manager, error) {
	mgrOpts := managerOptions(o)
	var metricsCerts *certwatcher.CertWatcher
	if o.MetricsCertPath != "" {
		// As kubebuilder's scaffold: a certificate from files (a mounted
		// Secret, cert-manager's), reloaded when they change. A missing
		// file fails the start rather than falling back to a self-signed
		// certificate the scraper would not trust.
		var err error
		metricsCerts, err = certwatcher.New(filepath.Join(o.MetricsCertPath, o.MetricsCertName), filepath.Join(o.MetricsCertPath, o.MetricsCertKey))
		if err != nil {
			return nil, fmt.Errorf("load the metrics certificate: %w", err)
		}
		log.Info("Serving metrics with the certificate from files", "certPath", o.MetricsCertPath)
		mgrOpts.Metrics.TLSOpts = append(slices.Clone(mgrOpts.Metrics.TLSOpts), func(c *tls.Config) { c.GetCertificate = metricsCerts.GetCertificate })
	}
	var leaderLock *resourcelock.LeaseLock
	if o.LeaderElect {
		var err error
		if leaderLock, err = newLeaderLock(restConfig, o.LeaderElectionNamespace, o.RenewDeadline); err != nil {
			return nil, fmt.Errorf("set up leader election: %w", err)
		}
		log.Info("Leader election", "lease", o.LeaderElectionNamespace+"/"+leaderElectionID, "identity", leaderLock.Identity(),
			"leaseDuration", o.LeaseDuration, "renewDeadline", o.RenewDeadline, "retryPeriod", o.RetryPeriod)
		mgrOpts.LeaderElectionResourceLockInterface = leaderLock
	}
	mgr, err := ctrl.NewManager(restConfig, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("create the manager: %w", err)
	}
	if metricsCerts != nil {
		if err := mgr.Add(metricsCerts); err != nil {
			return nil, fmt.Errorf("watch the metrics certificate: %w", err)
		}
	}
	if leaderLock != nil {
		// "<identity> became leader" Events on the Lease, as
		// controller-runtime's own lock records them.
		leaderLock.LockConfig.EventRecorder = mgr.GetEventRecorderFor(leaderLock.Identity()) //nolint:staticcheck // resourcelock takes the old recorder
	}
	return mgr, nil
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
