package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/device"
)

// options are the check-in service's flags: newOptions gives the
// defaults, addFlags binds them, validate checks them.
type options struct {
	addr, probeAddr, metricsAddr, certFile, keyFile, devicesNS, addressCIDRs string
	staleAfter, interval, minInterval                                        time.Duration
	maxInFlight, apiBurst                                                    int
	apiQPS                                                                   float64
	zap                                                                      zap.Options
	showVersion                                                              bool

	// addressRanges are addressCIDRs parsed, set by validate.
	addressRanges []netip.Prefix
}

func newOptions() *options {
	return &options{
		addr: ":9444", probeAddr: ":8081", metricsAddr: ":8080",
		certFile: "/etc/itmanager-checkin/tls/tls.crt", keyFile: "/etc/itmanager-checkin/tls/tls.key",
		devicesNS: "itmanager-devices", staleAfter: 5 * time.Minute, interval: time.Minute,
		minInterval: checkin.DefaultMinInterval, maxInFlight: checkin.DefaultMaxInFlight,
		apiQPS: 300, apiBurst: 600, zap: zap.Options{Development: false},
	}
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "checkin-bind-address", o.addr, "Address the check-in service (HTTPS) binds to.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", o.probeAddr, "Address the health (/healthz) and readiness (/readyz) probes bind to (plain HTTP).")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", o.metricsAddr, "Address of the Prometheus metrics (plain HTTP, check-in counts only); \"0\" disables them.")
	fs.StringVar(&o.certFile, "tls-cert-file", o.certFile, "Serving certificate (PEM); reloaded when it changes, e.g. a mounted Secret the manager rotates.")
	fs.StringVar(&o.keyFile, "tls-key-file", o.keyFile, "Private key of the serving certificate (PEM); reloaded when it changes.")
	fs.StringVar(&o.devicesNS, "devices-namespace", o.devicesNS, "Namespace of the per-device Leases.")
	fs.DurationVar(&o.staleAfter, "checkin-stale-after", o.staleAfter, "The manager's --checkin-stale-after; written to each Lease as its duration.")
	fs.DurationVar(&o.interval, "agent-interval", o.interval, "How often agents are asked to check in.")
	fs.DurationVar(&o.minInterval, "checkin-min-interval", o.minInterval, "A device checking in more often is answered 429 with Retry-After, and a sequence may advance by at most one per this interval, plus one; judged from the device's Lease, so it holds across replicas.")
	fs.IntVar(&o.maxInFlight, "checkin-max-inflight", o.maxInFlight, "Check-ins answered at once by this replica; more are answered 503 with Retry-After.")
	fs.StringVar(&o.addressCIDRs, "agent-address-cidrs", o.addressCIDRs, "Comma-separated CIDRs that reported device addresses must fall in (default: any).")
	fs.Float64Var(&o.apiQPS, "kube-api-qps", o.apiQPS, "Client-side rate limit of the API requests per second. Each accepted check-in reads a Lease and a Device and renews the Lease: N devices at one check-in a minute need about 3N/60.")
	fs.IntVar(&o.apiBurst, "kube-api-burst", o.apiBurst, "Burst above --kube-api-qps.")
	fs.BoolVar(&o.showVersion, "version", o.showVersion, "Print the version and commit, and exit.")
	o.zap.BindFlags(fs)
}

// validate reports every bad flag by name.
func (o *options) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", name, fmt.Sprintf(format, args...)))
	}
	if o.minInterval <= 0 || o.interval < o.minInterval*10/9 {
		// The agent jitters its interval by ±10%: an interval too close to
		// the minimum would have agents refused for checking in too often.
		errs = append(errs, errors.New("--checkin-min-interval must be positive and at most 90% of --agent-interval"))
	}
	for _, a := range []struct{ flag, value string }{
		{"checkin-bind-address", o.addr}, {"health-probe-bind-address", o.probeAddr}, {"metrics-bind-address", o.metricsAddr},
	} {
		if a.flag == "metrics-bind-address" && a.value == "0" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.value); err != nil {
			bad(a.flag, "%q is not host:port", a.value)
		}
	}
	if o.certFile == "" {
		bad("tls-cert-file", "must be set")
	}
	if o.keyFile == "" {
		bad("tls-key-file", "must be set")
	}
	if msgs := validation.IsDNS1123Label(o.devicesNS); len(msgs) > 0 {
		bad("devices-namespace", "%q is not a namespace name: %s", o.devicesNS, strings.Join(msgs, "; "))
	}
	if o.staleAfter <= 0 {
		bad("checkin-stale-after", "must be positive, got %s", o.staleAfter)
	}
	if o.maxInFlight < 1 {
		bad("checkin-max-inflight", "must be at least 1, got %d", o.maxInFlight)
	}
	ranges, err := device.ParseRanges(o.addressCIDRs)
	if err != nil {
		bad("agent-address-cidrs", "%v", err)
	}
	o.addressRanges = ranges
	if math.IsNaN(o.apiQPS) || math.IsInf(o.apiQPS, 0) {
		bad("kube-api-qps", "must be a number, got %v", o.apiQPS)
	}
	if o.apiBurst < 0 {
		bad("kube-api-burst", "must not be negative, got %d", o.apiBurst)
	}
	return errors.Join(errs...)
}
