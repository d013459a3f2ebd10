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
	"errors"
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
	"github.com/itmanager-io/itmanager/internal/device"
)

func main() {
	var (
		addr         string
		probeAddr    string
		metricsAddr  string
		certFile     string
		keyFile      string
		devicesNS    string
		staleAfter   time.Duration
		interval     time.Duration
		minInterval  time.Duration
		maxInFlight  int
		addressCIDRs string
		apiQPS       float64
		apiBurst     int
	)
	flag.StringVar(&addr, "checkin-bind-address", ":9444", "Address the check-in service (HTTPS) binds to.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health (/healthz) and readiness (/readyz) probes bind to (plain HTTP).")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics (plain HTTP, check-in counts only); \"0\" disables them.")
	flag.StringVar(&certFile, "tls-cert-file", "/etc/itmanager-checkin/tls/tls.crt", "Serving certificate (PEM); reloaded when it changes, e.g. a mounted Secret the manager rotates.")
	flag.StringVar(&keyFile, "tls-key-file", "/etc/itmanager-checkin/tls/tls.key", "Private key of the serving certificate (PEM); reloaded when it changes.")
	flag.StringVar(&devicesNS, "devices-namespace", "itmanager-devices", "Namespace of the per-device Leases.")
	flag.DurationVar(&staleAfter, "checkin-stale-after", 5*time.Minute, "The manager's --checkin-stale-after; written to each Lease as its duration.")
	flag.DurationVar(&interval, "agent-interval", time.Minute, "How often agents are asked to check in.")
	flag.DurationVar(&minInterval, "checkin-min-interval", checkin.DefaultMinInterval, "A device checking in more often is answered 429 with Retry-After, and a sequence may advance by at most one per this interval, plus one; judged from the device's Lease, so it holds across replicas.")
	flag.IntVar(&maxInFlight, "checkin-max-inflight", checkin.DefaultMaxInFlight, "Check-ins answered at once by this replica; more are answered 503 with Retry-After.")
	flag.StringVar(&addressCIDRs, "agent-address-cidrs", "", "Comma-separated CIDRs that reported device addresses must fall in (default: any).")
	flag.Float64Var(&apiQPS, "kube-api-qps", 300, "Client-side rate limit of the API requests per second. Each accepted check-in reads a Lease and a Device and renews the Lease: N devices at one check-in a minute need about 3N/60.")
	flag.IntVar(&apiBurst, "kube-api-burst", 600, "Burst above --kube-api-qps.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")
	if err := run(ctrl.SetupSignalHandler(), config{
		addr: addr, probeAddr: probeAddr, metricsAddr: metricsAddr, certFile: certFile, keyFile: keyFile,
		devicesNS: devicesNS, staleAfter: staleAfter, interval: interval, minInterval: minInterval,
		maxInFlight: maxInFlight, addressCIDRs: addressCIDRs, apiQPS: apiQPS, apiBurst: apiBurst,
	}); err != nil {
		log.Error(err, "Check-in service stopped")
		os.Exit(1)
	}
}

type config struct {
	addr, probeAddr, metricsAddr, certFile, keyFile, devicesNS, addressCIDRs string
	staleAfter, interval, minInterval                                        time.Duration
	maxInFlight, apiBurst                                                    int
	apiQPS                                                                   float64
}

func run(ctx context.Context, c config) error {
	log := ctrl.Log.WithName("checkin")
	if c.minInterval <= 0 || c.interval < c.minInterval*10/9 {
		// The agent jitters its interval by ±10%: an interval too close to
		// the minimum would have agents refused for checking in too often.
		return errors.New("--checkin-min-interval must be positive and at most 90% of --agent-interval")
	}
	cidrs, err := device.ParseRanges(c.addressCIDRs)
	if err != nil {
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
		AddressCIDRs: cidrs, Log: log,
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
	log.Info("Starting the check-in service", "devicesNamespace", c.devicesNS, "minInterval", c.minInterval, "maxInFlight", c.maxInFlight)
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
