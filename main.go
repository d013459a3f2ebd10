// Command manager runs the itmanager operator: its controllers, the
// admission webhook for checks CEL cannot express, metrics and health probes.
package main

import (
	"crypto/tls"
	"flag"
	"os"

	// Embedded IANA time zone data, so MaintenanceWindow time zones resolve
	// identically in a distroless image and on a developer's machine.
	_ "time/tzdata"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
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

// Leader election and events.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// The manager reads the kinds it reconciles; later controllers add their own
// markers next to their Reconcile methods.
// +kubebuilder:rbac:groups=itmanager.io,resources=devices;accesspolicies;onboardingrequests;accountproviders;maintenancewindows,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices/status;accesspolicies/status;onboardingrequests/status;accountproviders/status;maintenancewindows/status,verbs=get;update;patch

func main() {
	var (
		metricsAddr          string
		metricsSecure        bool
		probeAddr            string
		enableLeaderElection bool
		leaderElectionNS     string
		enableWebhooks       bool
		webhookHost          string
		webhookPort          int
		webhookCertDir       string
		enableHTTP2          bool
		operatorNamespace    string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; \"0\" disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, authenticating and authorizing each scrape.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "Elect a leader so only one replica reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the operator namespace).")
	flag.BoolVar(&enableWebhooks, "enable-webhooks", true, "Serve the validating admission webhook.")
	flag.StringVar(&webhookHost, "webhook-host", "", "Address the webhook server binds to (default: all).")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key for the webhook server; reloaded when they change.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the metrics and webhook servers (off by default: CVE-2023-44487).")
	flag.StringVar(&operatorNamespace, "operator-namespace", envOr("POD_NAMESPACE", "itmanager-system"), "Namespace of the operator; it holds the leader election Lease, and Secrets referenced by AccountProviders resolve only here.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

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

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "itmanager.itmanager.io",
		LeaderElectionNamespace: leaderElectionNS,
		// The manager exits right after losing leadership, so stepping down
		// early on SIGTERM is safe and lets a new leader start at once.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    webhookHost,
			Port:    webhookPort,
			CertDir: webhookCertDir,
			TLSOpts: tlsOpts,
		}),
	})
	if err != nil {
		log.Error(err, "Unable to create manager")
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

	log.Info("Starting manager", "operatorNamespace", operatorNamespace)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Manager exited with an error")
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
