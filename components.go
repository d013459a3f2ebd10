package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/certexpiry"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/options"
	itmwebhook "github.com/itmanager-io/itmanager/internal/webhook"
	"github.com/itmanager-io/itmanager/internal/webhookcert"
)

// wire sets up every component on mgr, in order.
func wire(ctx context.Context, mgr ctrl.Manager, o *options.Manager, restConfig *rest.Config) error {
	list, err := components(ctx, mgr, o, restConfig)
	if err != nil {
		return err
	}
	for _, c := range list {
		if err := c.setup(mgr); err != nil {
			return fmt.Errorf("set up %s: %w", c.name, err)
		}
	}
	return nil
}

// component is one part of the manager: a controller, the webhook, a
// background task, a probe.
type component struct {
	name  string
	setup func(ctrl.Manager) error
	// of is the reconciler, webhook or runnable that setup wires (nil for
	// indexes and probes): main_test checks every reconciler is here.
	of any
}

type setupWithManager interface {
	SetupWithManager(ctrl.Manager) error
}

func reconciler(name string, r setupWithManager) component {
	return component{name: name, setup: r.SetupWithManager, of: r}
}

func runnable(name string, r manager.Runnable) component {
	return component{name: name, setup: func(mgr ctrl.Manager) error { return mgr.Add(r) }, of: r}
}

// components is everything the manager runs, from validated options.
func components(ctx context.Context, mgr ctrl.Manager, o *options.Manager, restConfig *rest.Config) ([]component, error) {
	apiServer, apiCA, err := apiServerFor(restConfig, o.ExternalAPIURL)
	if err != nil {
		return nil, fmt.Errorf("read the API server's CA: %w", err)
	}
	clk := clock.RealClock{}
	providers := &controllers.Providers{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Clock: clk,
		OperatorNamespace: o.OperatorNamespace, DevicesNamespace: o.DevicesNamespace, APIServer: apiServer, APIServerCA: apiCA,
	}
	certSecret := types.NamespacedName{Namespace: o.OperatorNamespace, Name: o.CheckinCertSecret}
	selfSigned := o.CheckinCertSecret == ""
	if selfSigned {
		certSecret.Name = "itmanager-checkin-tls"
	}
	certs := &checkin.CertLoader{Reader: mgr.GetAPIReader(), Secret: certSecret, Clock: clk, Refresh: time.Minute}

	list := []component{
		{name: "field indexes", setup: func(mgr ctrl.Manager) error { return controllers.SetupIndexes(ctx, mgr) }},
		reconciler("controller Device", &controllers.DeviceReconciler{
			Client: mgr.GetClient(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-device"),
			DevicesNamespace: o.DevicesNamespace, StaleAfter: o.StaleAfter, RefreshEvery: o.LastCheckInRefresh, Workers: o.Workers,
			AddressRanges: o.AddressRanges,
		}),
		reconciler("controller AccessPolicy", &controllers.AccessPolicyReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-access"),
			OperatorNamespace: o.OperatorNamespace, DevicesNamespace: o.DevicesNamespace, BindableRoles: o.BindableRoleNames(), Workers: o.Workers,
			UpgradesNamespace: o.UpgradesNamespace, ClusterWideRoles: o.ClusterWideRoleNames(),
			AddressRanges: o.AddressRanges,
		}),
		reconciler("controller MaintenanceWindow", &controllers.MaintenanceWindowReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-maintenance"),
			UpgradesNamespace: o.UpgradesNamespace, Workers: o.Workers,
		}),
		reconciler("controller NodeDiscovery", &controllers.NodeDiscoveryReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("itmanager-node-discovery"), Workers: o.Workers,
		}),
		reconciler("controller AccountProvider", &controllers.AccountProviderReconciler{
			Client: mgr.GetClient(), Providers: providers, Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-accountprovider"),
			CheckEvery: o.ProviderCheckInterval,
		}),
		reconciler("controller Onboarding", &controllers.OnboardingReconciler{
			Client: mgr.GetClient(), Providers: providers, Clock: clk, Recorder: mgr.GetEventRecorder("itmanager-onboarding"), Workers: o.Workers,
		}),
	}
	if selfSigned {
		list = append(list, runnable("the check-in certificate rotator", &checkin.Rotator{
			Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Secret: certSecret, Hosts: o.CheckinCertHostNames(), Clock: clk,
			Log: ctrl.Log.WithName("checkin-cert"), Every: time.Hour,
		}))
	}
	list = append(list, reconciler("controller Enrolment", &controllers.EnrolmentReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("itmanager-enrolment"),
		DevicesNamespace: o.DevicesNamespace, URL: o.CheckinURL, CA: certs.CA, Workers: o.Workers,
	}))
	if o.EnableWebhooks {
		list = append(list, reconciler("webhook MaintenanceWindow", &itmwebhook.MaintenanceWindowValidator{}))
	}
	if o.WebhookCertRotation() {
		certs, ok := webhookcert.CertsOf(mgr.GetWebhookServer())
		if !ok {
			return nil, fmt.Errorf("the webhook server does not wait for rotated certificates")
		}
		list = append(list, component{name: "the webhook certificate rotator", setup: func(mgr ctrl.Manager) error { return certs.Setup(ctx, mgr) }, of: certs})
	}
	list = append(list, component{name: "the inventory and certificate metrics", setup: func(mgr ctrl.Manager) error {
		if err := controllers.RegisterInventory(mgr.GetCache()); err != nil {
			return err
		}
		return controllers.Replace(&certexpiry.Collector{Sources: certSources(ctx, o, certs)})
	}})
	return append(list,
		component{name: "the health check", setup: func(mgr ctrl.Manager) error { return mgr.AddHealthzCheck("healthz", healthz.Ping) }},
		component{name: "the ready check", setup: func(mgr ctrl.Manager) error {
			readyz := healthz.Ping
			if o.EnableWebhooks {
				// Ready only once the webhook server serves (with rotation:
				// once this replica has its certificate), so a Service never
				// sends an admission request to a replica that cannot answer it.
				readyz = mgr.GetWebhookServer().StartedChecker()
			}
			return mgr.AddReadyzCheck("readyz", readyz)
		}},
	), nil
}

// certSources are the serving certificates whose expiry the manager
// exports: the webhook's (as the webhook server reads it), the check-in
// service's (the Secret it serves from) and the metrics server's own when
// it comes from files.
func certSources(ctx context.Context, o *options.Manager, checkinCerts *checkin.CertLoader) map[string]certexpiry.Source {
	sources := map[string]certexpiry.Source{
		"checkin": func() (*x509.Certificate, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return checkinCerts.Leaf(ctx)
		},
	}
	if o.EnableWebhooks {
		sources["webhook"] = certexpiry.File(filepath.Join(o.WebhookCertDir, "tls.crt"))
	}
	if o.MetricsCertPath != "" {
		sources["metrics"] = certexpiry.File(filepath.Join(o.MetricsCertPath, o.MetricsCertName))
	}
	return sources
}
