// Package options is the manager's command line: every flag, its default
// and its validation, apart from the wiring in main.go, so a bad value is
// refused before anything starts, with an error naming the flag.
package options

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/webhookcert"
)

// Manager holds the manager's flags. NewManager gives the defaults,
// AddFlags binds them, Complete validates them and fills in the defaults
// that depend on other flags.
type Manager struct {
	MetricsAddr   string
	MetricsSecure bool
	// MetricsCertPath, when set, is the directory of the metrics server's
	// certificate (MetricsCertName, MetricsCertKey), watched and reloaded
	// (certwatcher); empty: controller-runtime serves a self-signed one.
	MetricsCertPath string
	MetricsCertName string
	MetricsCertKey  string
	ProbeAddr       string
	PprofAddr       string

	LeaderElect             bool
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration

	EnableWebhooks bool
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	// WebhookCertSecret, when set, turns on certificate rotation by the
	// manager (internal/webhookcert) for WebhookServiceName and
	// WebhookConfigurationName.
	WebhookCertSecret        string
	WebhookServiceName       string
	WebhookConfigurationName string
	EnableHTTP2              bool

	OperatorNamespace string
	DevicesNamespace  string
	UpgradesNamespace string

	StaleAfter         time.Duration
	LastCheckInRefresh time.Duration
	CheckinURL         string
	CheckinCertSecret  string
	// CheckinCertHosts, BindableRoles, ClusterWideRoles and
	// AgentAddressCIDRs are comma-separated, as on the command line.
	CheckinCertHosts  string
	AgentAddressCIDRs string

	APIQPS   float64
	APIBurst int
	Workers  int

	BindableRoles    string
	ClusterWideRoles string

	ExternalAPIURL        string
	ProviderCheckInterval time.Duration

	Zap zap.Options

	// ShowVersion is --version: print the version and commit, and exit
	// before anything is validated or started.
	ShowVersion bool

	// AddressRanges are AgentAddressCIDRs parsed, set by Complete.
	AddressRanges []netip.Prefix
}

// NewManager is the defaults; getenv (os.Getenv) supplies POD_NAMESPACE,
// the default operator namespace in a Pod.
func NewManager(getenv func(string) string) *Manager {
	operatorNS := "itmanager-system"
	if ns := getenv("POD_NAMESPACE"); ns != "" {
		operatorNS = ns
	}
	return &Manager{
		MetricsAddr:              ":8443",
		MetricsSecure:            true,
		MetricsCertName:          "tls.crt",
		MetricsCertKey:           "tls.key",
		ProbeAddr:                ":8081",
		PprofAddr:                "0",
		LeaseDuration:            15 * time.Second,
		RenewDeadline:            10 * time.Second,
		RetryPeriod:              2 * time.Second,
		EnableWebhooks:           true,
		WebhookPort:              9443,
		WebhookServiceName:       webhookcert.DefaultServiceName,
		WebhookConfigurationName: webhookcert.DefaultConfigurationName,
		OperatorNamespace:        operatorNS,
		DevicesNamespace:         "itmanager-devices",
		UpgradesNamespace:        controllers.DefaultUpgradesNamespace,
		StaleAfter:               5 * time.Minute,
		LastCheckInRefresh:       5 * time.Minute,
		APIQPS:                   200,
		APIBurst:                 400,
		Workers:                  16,
		BindableRoles:            strings.Join(controllers.DefaultBindableRoles, ","),
		ClusterWideRoles:         strings.Join(controllers.DefaultClusterWideRoles, ","),
		ProviderCheckInterval:    5 * time.Minute,
		Zap:                      zap.Options{Development: false},
	}
}

// AddFlags binds every flag to o, with o's values as the defaults.
func (o *Manager) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address the metrics endpoint binds to; \"0\" disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "Serve metrics over HTTPS, authenticating and authorizing each scrape.")
	fs.StringVar(&o.MetricsCertPath, "metrics-cert-path", o.MetricsCertPath, "Directory with the metrics server's certificate (--metrics-cert-name, --metrics-cert-key), reloaded when it changes; empty: a self-signed certificate generated at start.")
	fs.StringVar(&o.MetricsCertName, "metrics-cert-name", o.MetricsCertName, "File name of the metrics server's certificate in --metrics-cert-path.")
	fs.StringVar(&o.MetricsCertKey, "metrics-cert-key", o.MetricsCertKey, "File name of the metrics server's private key in --metrics-cert-path.")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address the health and readiness probes bind to.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader so only one replica reconciles at a time.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "Namespace of the leader election Lease (default: the operator namespace).")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "How long a standby replica waits after the leader's last renewal before it takes the lead: the longest a dead leader leaves the controllers idle.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "How long the leader keeps trying to renew its Lease before it gives up the lead and exits; less than --leader-elect-lease-duration.")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "How often the leader renews and a standby tries to take the lead.")
	fs.BoolVar(&o.EnableWebhooks, "enable-webhooks", o.EnableWebhooks, "Serve the validating admission webhook.")
	fs.StringVar(&o.WebhookHost, "webhook-host", o.WebhookHost, "Address the webhook server binds to (default: all).")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "Port the webhook server listens on.")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "Directory with tls.crt and tls.key for the webhook server; reloaded when they change. With --webhook-cert-secret the manager writes them there (it must be writable; default "+DefaultWebhookCertDir+").")
	fs.StringVar(&o.WebhookCertSecret, "webhook-cert-secret", o.WebhookCertSecret, "Secret in the operator namespace where the manager keeps a self-signed CA and the webhook's serving certificate, renewing them before they expire, and from which every replica serves; the leader writes the CA into --webhook-configuration-name. Empty: no rotation, the certificate is read from --webhook-cert-dir as given (cert-manager, make dev).")
	fs.StringVar(&o.WebhookServiceName, "webhook-service-name", o.WebhookServiceName, "Service in the operator namespace the API server calls the webhook through: the rotated certificate is for <name>.<namespace>.svc.")
	fs.StringVar(&o.WebhookConfigurationName, "webhook-configuration-name", o.WebhookConfigurationName, "ValidatingWebhookConfiguration that gets the rotated CA bundle; no other is changed.")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", o.EnableHTTP2, "Serve HTTP/2 on the metrics and webhook servers (off by default: CVE-2023-44487).")
	fs.StringVar(&o.OperatorNamespace, "operator-namespace", o.OperatorNamespace, "Namespace of the operator; it holds the leader election Lease, and Secrets referenced by AccountProviders resolve only here.")
	fs.StringVar(&o.DevicesNamespace, "devices-namespace", o.DevicesNamespace, "Namespace of the per-device Leases and enrolment Secrets.")
	fs.StringVar(&o.UpgradesNamespace, "upgrades-namespace", o.UpgradesNamespace, "Namespace where node upgrade Jobs run (Pod Security privileged, holding the ServiceAccount "+controllers.NodeUpgradeServiceAccount+"); the manager's Job rights are only there.")
	fs.DurationVar(&o.StaleAfter, "checkin-stale-after", o.StaleAfter, "A device whose last check-in is older than this is CheckedIn=False.")
	fs.DurationVar(&o.LastCheckInRefresh, "last-checkin-refresh", o.LastCheckInRefresh, "Rewrite a Device's status.lastCheckIn at most this often while CheckedIn does not change (the Lease holds the live value).")
	fs.StringVar(&o.CheckinURL, "checkin-url", o.CheckinURL, "URL agents reach the check-in service at, written into enrolment Secrets (default https://itmanager-checkin.<operator namespace>.svc).")
	fs.StringVar(&o.CheckinCertSecret, "checkin-cert-secret", o.CheckinCertSecret, "Secret in the operator namespace with tls.crt, tls.key (and ca.crt) for the check-in service; when empty the manager issues and rotates a self-signed one in itmanager-checkin-tls.")
	fs.StringVar(&o.CheckinCertHosts, "checkin-cert-hosts", o.CheckinCertHosts, "Comma-separated DNS names and IPs of the self-signed check-in certificate (default: the host of --checkin-url).")
	fs.StringVar(&o.AgentAddressCIDRs, "agent-address-cidrs", o.AgentAddressCIDRs, "Comma-separated CIDRs that device addresses, reported and static (spec.addresses), must fall in to count (default: any); give the check-in service the same.")
	fs.Float64Var(&o.APIQPS, "kube-api-qps", o.APIQPS, "Client-side rate limit of the controllers' API requests per second.")
	fs.IntVar(&o.APIBurst, "kube-api-burst", o.APIBurst, "Burst above --kube-api-qps.")
	fs.IntVar(&o.Workers, "workers", o.Workers, "Concurrent reconciles per controller (they wait on the API server, not the CPU).")
	fs.StringVar(&o.BindableRoles, "bindable-cluster-roles", o.BindableRoles, "Comma-separated ClusterRoles AccessPolicies may bind; the manager's RBAC must grant \"bind\" on exactly these.")
	fs.StringVar(&o.ClusterWideRoles, "cluster-wide-roles", o.ClusterWideRoles, "Comma-separated ClusterRoles a kubernetesAccess entry without namespaces binds by a ClusterRoleBinding; any other bindable role is bound by a RoleBinding in every namespace but kube-* and itmanager's own.")
	fs.StringVar(&o.ExternalAPIURL, "external-api-url", o.ExternalAPIURL, "API server URL written into the kubeconfigs Kubernetes AccountProviders issue (default: the URL the manager itself uses).")
	fs.DurationVar(&o.ProviderCheckInterval, "account-provider-check-interval", o.ProviderCheckInterval, "How often each AccountProvider's connectivity is checked again; an unreachable one sooner, after as long as it has been failing (from 1s up to this).")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", o.PprofAddr, "Address of the Go profiling endpoints (net/http/pprof); \"0\" disables them.")
	fs.BoolVar(&o.ShowVersion, "version", o.ShowVersion, "Print the version and commit, and exit.")
	o.Zap.BindFlags(fs)
}

// Complete validates every flag, reporting each bad one by name, and
// fills in the defaults that follow from others: --checkin-url from the
// operator namespace, --leader-election-namespace from it too, and
// --checkin-cert-hosts from the check-in URL's host.
func (o *Manager) Complete() error {
	if o.CheckinURL == "" {
		o.CheckinURL = fmt.Sprintf("https://itmanager-checkin.%s.svc", o.OperatorNamespace)
	}
	if o.LeaderElectionNamespace == "" {
		o.LeaderElectionNamespace = o.OperatorNamespace
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", name, fmt.Sprintf(format, args...)))
	}

	for _, a := range []struct{ flag, value string }{
		{"metrics-bind-address", o.MetricsAddr}, {"health-probe-bind-address", o.ProbeAddr}, {"pprof-bind-address", o.PprofAddr},
	} {
		if err := bindAddress(a.value); err != nil {
			bad(a.flag, "%v", err)
		}
	}
	if o.LeaderElect && (o.RetryPeriod >= o.RenewDeadline || o.RenewDeadline >= o.LeaseDuration) {
		errs = append(errs, fmt.Errorf("need --leader-elect-retry-period (%s) < --leader-elect-renew-deadline (%s) < --leader-elect-lease-duration (%s)",
			o.RetryPeriod, o.RenewDeadline, o.LeaseDuration))
	}
	if o.MetricsCertPath != "" && !o.MetricsSecure {
		bad("metrics-cert-path", "needs --metrics-secure (a certificate for a plain HTTP endpoint would go unused)")
	}
	if o.MetricsCertPath != "" && (o.MetricsCertName == "" || o.MetricsCertKey == "") {
		bad("metrics-cert-path", "needs --metrics-cert-name and --metrics-cert-key")
	}
	if o.WebhookPort < 1 || o.WebhookPort > 65535 {
		bad("webhook-port", "%d is not a port (1-65535)", o.WebhookPort)
	}
	if o.WebhookCertSecret != "" {
		if o.WebhookCertDir == "" {
			o.WebhookCertDir = DefaultWebhookCertDir
		}
		if msgs := validation.IsDNS1123Subdomain(o.WebhookCertSecret); len(msgs) > 0 {
			bad("webhook-cert-secret", "%q is not a Secret name: %s", o.WebhookCertSecret, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1035Label(o.WebhookServiceName); len(msgs) > 0 {
			bad("webhook-service-name", "%q is not a Service name: %s", o.WebhookServiceName, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsDNS1123Subdomain(o.WebhookConfigurationName); len(msgs) > 0 {
			bad("webhook-configuration-name", "%q is not a ValidatingWebhookConfiguration name: %s", o.WebhookConfigurationName, strings.Join(msgs, "; "))
		}
	}
	for _, ns := range []struct{ flag, value string }{
		{"operator-namespace", o.OperatorNamespace}, {"devices-namespace", o.DevicesNamespace},
		{"upgrades-namespace", o.UpgradesNamespace}, {"leader-election-namespace", o.LeaderElectionNamespace},
	} {
		if msgs := validation.IsDNS1123Label(ns.value); len(msgs) > 0 {
			bad(ns.flag, "%q is not a namespace name: %s", ns.value, strings.Join(msgs, "; "))
		}
	}
	if o.StaleAfter <= 0 {
		bad("checkin-stale-after", "must be positive, got %s", o.StaleAfter)
	}
	if o.LastCheckInRefresh < 0 {
		bad("last-checkin-refresh", "must not be negative, got %s", o.LastCheckInRefresh)
	}
	if o.ProviderCheckInterval <= 0 {
		bad("account-provider-check-interval", "must be positive, got %s", o.ProviderCheckInterval)
	}
	if err := checkinURL(o.CheckinURL); err != nil {
		errs = append(errs, err)
	} else if o.CheckinCertHosts == "" {
		o.CheckinCertHosts = strings.Join(defaultCertHosts(o.CheckinURL), ",")
	}
	if o.CheckinCertSecret != "" {
		if msgs := validation.IsDNS1123Subdomain(o.CheckinCertSecret); len(msgs) > 0 {
			bad("checkin-cert-secret", "%q is not a Secret name: %s", o.CheckinCertSecret, strings.Join(msgs, "; "))
		}
	}
	for _, h := range SplitList(o.CheckinCertHosts) {
		if !certHost(h) {
			bad("checkin-cert-hosts", "%q is neither an IP address nor a DNS name", h)
		}
	}
	ranges, err := device.ParseRanges(o.AgentAddressCIDRs)
	if err != nil {
		bad("agent-address-cidrs", "%v", err)
	}
	o.AddressRanges = ranges
	if math.IsNaN(o.APIQPS) || math.IsInf(o.APIQPS, 0) {
		bad("kube-api-qps", "must be a number, got %v", o.APIQPS)
	}
	if o.APIBurst < 0 {
		bad("kube-api-burst", "must not be negative, got %d", o.APIBurst)
	}
	if o.Workers < 1 {
		bad("workers", "must be at least 1, got %d", o.Workers)
	}
	for _, roles := range []struct{ flag, value string }{
		{"bindable-cluster-roles", o.BindableRoles}, {"cluster-wide-roles", o.ClusterWideRoles},
	} {
		for _, r := range SplitList(roles.value) {
			if msgs := content.IsPathSegmentName(r); len(msgs) > 0 {
				bad(roles.flag, "%q is not a ClusterRole name: %s", r, strings.Join(msgs, "; "))
			}
		}
	}
	if o.ExternalAPIURL != "" {
		if u, err := url.Parse(o.ExternalAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("external-api-url", "%q must be an http:// or https:// URL", o.ExternalAPIURL)
		}
	}
	return errors.Join(errs...)
}

// DefaultWebhookCertDir is controller-runtime's default certificate
// directory, where the manager writes rotated certificates when
// --webhook-cert-dir is not given.
var DefaultWebhookCertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")

// WebhookCertRotation reports whether the manager issues and rotates the
// webhook's serving certificate itself.
func (o *Manager) WebhookCertRotation() bool { return o.EnableWebhooks && o.WebhookCertSecret != "" }

// BindableRoleNames is --bindable-cluster-roles as a list (nil: none).
func (o *Manager) BindableRoleNames() []string { return SplitList(o.BindableRoles) }

// ClusterWideRoleNames is --cluster-wide-roles as a list, never nil: an
// empty flag means no role is bound cluster-wide, where a nil list would
// mean the reconciler's default.
func (o *Manager) ClusterWideRoleNames() []string {
	return append([]string{}, SplitList(o.ClusterWideRoles)...)
}

// CheckinCertHostNames is --checkin-cert-hosts (after Complete: defaulted
// from --checkin-url) as a list.
func (o *Manager) CheckinCertHostNames() []string { return SplitList(o.CheckinCertHosts) }

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// bindAddress accepts what the servers accept: "0" (disabled), empty, or
// host:port.
func bindAddress(addr string) error {
	if addr == "" || addr == "0" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q is not host:port or \"0\"", addr)
	}
	return nil
}

// checkinURL: agents post their token there, and the service serves only
// HTTPS.
func checkinURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return fmt.Errorf("--checkin-url %q must be an https:// URL", s)
	}
	return nil
}

// defaultCertHosts are the names of the self-signed check-in certificate
// when --checkin-cert-hosts is empty: the check-in URL's host.
func defaultCertHosts(checkinURL string) []string {
	u, _ := url.Parse(checkinURL)
	host := u.Hostname()
	if ip := net.ParseIP(host); ip == nil && strings.HasSuffix(host, ".svc") {
		// Agents inside the cluster may also use the fully qualified name.
		return []string{host, host + ".cluster.local"}
	}
	return []string{host}
}

// certHost is an IP or a DNS name (a wildcard "*." first label allowed),
// case aside.
func certHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return len(validation.IsDNS1123Subdomain(strings.TrimPrefix(strings.ToLower(h), "*."))) == 0
}
