// Command itmanager-checkin serves the agent check-in service (HTTPS) that
// devices talk to, apart from the manager: its own process and Deployment,
// under its own ServiceAccount, which may only get and update Leases in the
// devices namespace, get Devices and patch devices/status. It holds no
// Secret rights: token hashes live on the Leases, and the serving
// certificate (issued and rotated by the manager) comes from files that the
// kubelet mounts from a Secret; they are reloaded when they change.
package main

import (
	"context"
	"flag"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/version"
)

func main() {
	o := newOptions()
	o.addFlags(flag.CommandLine)
	flag.Parse()
	if o.showVersion {
		version.Print(os.Stdout, "itmanager-checkin")
		return
	}

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	if err := run(ctrl.SetupSignalHandler(), o); err != nil {
		ctrl.Log.WithName("setup").Error(err, "Check-in service stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, c *options) error {
	log := ctrl.Log.WithName("checkin")
	if err := c.validate(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(itmv1.AddToScheme(scheme))
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(c.apiQPS), c.apiBurst
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	certs, err := certwatcher.New(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	go func() {
		if err := certs.Start(ctx); err != nil {
			log.Error(err, "Watching the serving certificate failed")
		}
	}()

	server := &checkin.Server{
		Reader: cl, Writer: cl, Clock: clock.RealClock{}, DevicesNamespace: c.devicesNS,
		StaleAfter: c.staleAfter, Interval: c.interval, MinInterval: c.minInterval, MaxInFlight: c.maxInFlight,
		AddressCIDRs: c.addressRanges, Log: log,
	}
	var serving atomic.Bool
	probes := http.NewServeMux()
	probes.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	probes.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !serving.Load() {
			http.Error(w, "not serving yet", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	if err := serveHTTP(ctx, c.probeAddr, probes); err != nil {
		return err
	}
	if c.metricsAddr != "0" {
		metrics := http.NewServeMux()
		metrics.Handle("GET /metrics", promhttp.HandlerFor(ctrlmetrics.Registry, promhttp.HandlerOpts{}))
		if err := serveHTTP(ctx, c.metricsAddr, metrics); err != nil {
			return err
		}
	}
	listener := &checkin.Listener{Addr: c.addr, Handler: server.Handler(), GetCertificate: certs.GetCertificate, Log: log,
		Started: func() { serving.Store(true) }}
	log.Info("Starting the check-in service", "version", version.Version, "commit", version.Commit, "devicesNamespace", c.devicesNS, "minInterval", c.minInterval, "maxInFlight", c.maxInFlight)
	return listener.Start(ctx)
}

// serveHTTP serves plain HTTP on addr until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return nil
}
