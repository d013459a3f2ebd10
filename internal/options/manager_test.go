package options

import (
	"flag"
	"io"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// parse is what main does: defaults, flags, Complete.
func parse(t *testing.T, env map[string]string, args ...string) (*Manager, error) {
	t.Helper()
	o := NewManager(func(k string) string { return env[k] })
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return o, o.Complete()
}

func TestDefaults(t *testing.T) {
	o, err := parse(t, nil)
	if err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	for name, c := range map[string]struct{ got, want any }{
		"metrics":            {o.MetricsAddr, ":8443"},
		"metrics secure":     {o.MetricsSecure, true},
		"metrics cert":       {o.MetricsCertPath, ""},
		"metrics cert name":  {o.MetricsCertName, "tls.crt"},
		"metrics cert key":   {o.MetricsCertKey, "tls.key"},
		"probes":             {o.ProbeAddr, ":8081"},
		"pprof off":          {o.PprofAddr, "0"},
		"no leader election": {o.LeaderElect, false},
		"lease namespace":    {o.LeaderElectionNamespace, "itmanager-system"},
		"lease duration":     {o.LeaseDuration, 15 * time.Second},
		"renew deadline":     {o.RenewDeadline, 10 * time.Second},
		"retry period":       {o.RetryPeriod, 2 * time.Second},
		"webhooks":           {o.EnableWebhooks, true},
		"webhook port":       {o.WebhookPort, 9443},
		"no cert rotation":   {o.WebhookCertRotation(), false},
		"webhook cert dir":   {o.WebhookCertDir, ""},
		"no HTTP/2":          {o.EnableHTTP2, false},
		"operator namespace": {o.OperatorNamespace, "itmanager-system"},
		"devices namespace":  {o.DevicesNamespace, "itmanager-devices"},
		"upgrades namespace": {o.UpgradesNamespace, "itmanager-upgrades"},
		"stale after":        {o.StaleAfter, 5 * time.Minute},
		"refresh":            {o.LastCheckInRefresh, 5 * time.Minute},
		"check-in URL":       {o.CheckinURL, "https://itmanager-checkin.itmanager-system.svc"},
		"self-signed":        {o.CheckinCertSecret, ""},
		"certificate hosts":  {o.CheckinCertHostNames(), []string{"itmanager-checkin.itmanager-system.svc", "itmanager-checkin.itmanager-system.svc.cluster.local"}},
		"any address":        {o.AddressRanges, []netip.Prefix(nil)},
		"qps":                {o.APIQPS, 200.0},
		"burst":              {o.APIBurst, 400},
		"workers":            {o.Workers, 16},
		"bindable roles":     {o.BindableRoleNames(), []string{"view", "edit"}},
		"cluster-wide roles": {o.ClusterWideRoleNames(), []string{"view"}},
		"external API":       {o.ExternalAPIURL, ""},
		"provider check":     {o.ProviderCheckInterval, 5 * time.Minute},
		"production logs":    {o.Zap.Development, false},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", name, c.got, c.want)
		}
	}
}

func TestPodNamespaceIsTheDefaultOperatorNamespace(t *testing.T) {
	o, err := parse(t, map[string]string{"POD_NAMESPACE": "it"})
	if err != nil {
		t.Fatal(err)
	}
	if o.OperatorNamespace != "it" || o.LeaderElectionNamespace != "it" || o.CheckinURL != "https://itmanager-checkin.it.svc" {
		t.Fatalf("got operator %q, lease %q, URL %q", o.OperatorNamespace, o.LeaderElectionNamespace, o.CheckinURL)
	}
	if o, _ = parse(t, map[string]string{"POD_NAMESPACE": "it"}, "--operator-namespace=ops"); o.OperatorNamespace != "ops" {
		t.Fatalf("--operator-namespace does not win over POD_NAMESPACE: %q", o.OperatorNamespace)
	}
}

func TestFlagsAreParsed(t *testing.T) {
	o, err := parse(t, nil,
		"--leader-elect", "--leader-election-namespace=leases", "--checkin-url=https://10.0.0.1:9444",
		"--agent-address-cidrs=10.0.0.1/8, fd00::/8,", "--bindable-cluster-roles=view,edit,admin", "--cluster-wide-roles=",
		"--checkin-cert-secret=my-tls", "--external-api-url=https://api.example.com:6443", "--workers=2",
		"--kube-api-qps=-1", "--kube-api-burst=0", "--last-checkin-refresh=0", "--zap-devel")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ got, want any }{
		"lease namespace kept": {o.LeaderElectionNamespace, "leases"},
		"ranges masked":        {o.AddressRanges, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		"roles split":          {o.BindableRoleNames(), []string{"view", "edit", "admin"}},
		"no cluster-wide role (not nil, which would mean the default)": {o.ClusterWideRoleNames(), []string{}},
		"an IP check-in URL is its own certificate host":               {o.CheckinCertHostNames(), []string{"10.0.0.1"}},
		"workers":                             {o.Workers, 2},
		"negative qps (no client-side limit)": {o.APIQPS, -1.0},
		"zap flags bound":                     {o.Zap.Development, true},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", name, c.got, c.want)
		}
	}
}

func TestCertificateHosts(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--checkin-url=https://checkin.example.com/"}, []string{"checkin.example.com"}},
		{[]string{"--checkin-url=https://itmanager-checkin.it.svc:9444"}, []string{"itmanager-checkin.it.svc", "itmanager-checkin.it.svc.cluster.local"}},
		{[]string{"--checkin-url=https://[fd00::1]:9444"}, []string{"fd00::1"}},
		{[]string{"--checkin-url=https://a.example.com", "--checkin-cert-hosts=b.example.com, 10.0.0.2"}, []string{"b.example.com", "10.0.0.2"}},
	} {
		o, err := parse(t, nil, c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := o.CheckinCertHostNames(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.args, got, c.want)
		}
	}
}

// TestWebhookCertRotationIsOnlyOnWithASecret: make dev and cert-manager
// give no Secret and serve the files they provide; the chart's default
// gives one, and the certificate then goes to the default directory unless
// another is named, for the Service and configuration named (checked only
// then).
func TestWebhookCertRotationIsOnlyOnWithASecret(t *testing.T) {
	o, err := parse(t, nil, "--webhook-cert-dir=/dev/certs", "--webhook-service-name=Not_Checked")
	if err != nil || o.WebhookCertRotation() || o.WebhookCertDir != "/dev/certs" {
		t.Fatalf("without a Secret: rotation %v, dir %q, err %v; want off, /dev/certs as given", o.WebhookCertRotation(), o.WebhookCertDir, err)
	}
	o, err = parse(t, nil, "--webhook-cert-secret=itm-webhook-cert")
	if err != nil || !o.WebhookCertRotation() || o.WebhookCertDir != DefaultWebhookCertDir ||
		o.WebhookServiceName != "itmanager-webhook-service" || o.WebhookConfigurationName != "itmanager-validating-webhook-configuration" {
		t.Fatalf("with a Secret: %+v, %v", o, err)
	}
	if o, _ = parse(t, nil, "--webhook-cert-secret=s", "--enable-webhooks=false"); o.WebhookCertRotation() {
		t.Error("rotation is on with the webhooks off")
	}
	for _, c := range []struct{ arg, want string }{
		{"--webhook-service-name=1webhook", "--webhook-service-name"},
		{"--webhook-service-name=web.hook", "--webhook-service-name"},
		{"--webhook-configuration-name=", "--webhook-configuration-name"},
		{"--webhook-configuration-name=Web hook", "--webhook-configuration-name"},
	} {
		if _, err := parse(t, nil, "--webhook-cert-secret=s", c.arg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with rotation: got %v, want an error naming %s", c.arg, err, c.want)
		}
	}
}

func TestMetricsCertPathIsAcceptedWithSecureServing(t *testing.T) {
	o, err := parse(t, nil, "--metrics-cert-path=/certs", "--metrics-cert-name=c.pem", "--metrics-cert-key=k.pem")
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if o.MetricsCertPath != "/certs" || o.MetricsCertName != "c.pem" || o.MetricsCertKey != "k.pem" {
		t.Errorf("got %q %q %q", o.MetricsCertPath, o.MetricsCertName, o.MetricsCertKey)
	}
}

func TestMetricsCertPathIsRefusedWithoutSecureServingOrFileNames(t *testing.T) {
	for _, args := range [][]string{
		{"--metrics-cert-path=/certs", "--metrics-secure=false"},
		{"--metrics-cert-path=/certs", "--metrics-cert-key="},
		{"--metrics-cert-path=/certs", "--metrics-cert-name="},
	} {
		if _, err := parse(t, nil, args...); err == nil || !strings.Contains(err.Error(), "--metrics-cert-path") {
			t.Errorf("%v: got %v, want an error naming --metrics-cert-path", args, err)
		}
	}
}

// TestBadValuesAreRefusedByName: each bad value is refused with an error
// that names its flag, before anything starts.
func TestBadValuesAreRefusedByName(t *testing.T) {
	for _, c := range []struct {
		arg, want string
	}{
		{"--metrics-bind-address=8443", "--metrics-bind-address"},
		{"--health-probe-bind-address=localhost", "--health-probe-bind-address"},
		{"--pprof-bind-address=:6060:1", "--pprof-bind-address"},
		{"--webhook-port=0", "--webhook-port"},
		{"--webhook-port=70000", "--webhook-port"},
		{"--webhook-cert-secret=Webhook_Cert", "--webhook-cert-secret"},
		{"--operator-namespace=", "--operator-namespace"},
		{"--devices-namespace=Devices", "--devices-namespace"},
		{"--upgrades-namespace=up_grades", "--upgrades-namespace"},
		{"--leader-election-namespace=a.b", "--leader-election-namespace"},
		{"--checkin-stale-after=0s", "--checkin-stale-after"},
		{"--last-checkin-refresh=-1s", "--last-checkin-refresh"},
		{"--account-provider-check-interval=0s", "--account-provider-check-interval"},
		{"--checkin-url=http://itmanager-checkin.it.svc", "--checkin-url"},
		{"--checkin-url=https://", "--checkin-url"},
		{"--checkin-url=itmanager-checkin.it.svc", "--checkin-url"},
		{"--checkin-cert-secret=My_Secret", "--checkin-cert-secret"},
		{"--checkin-cert-hosts=ok.example.com,not a host", "--checkin-cert-hosts"},
		{"--agent-address-cidrs=10.0.0.0/8,nonsense", "--agent-address-cidrs"},
		{"--agent-address-cidrs=10.0.0.1", "--agent-address-cidrs"},
		{"--kube-api-qps=NaN", "--kube-api-qps"},
		{"--kube-api-burst=-1", "--kube-api-burst"},
		{"--workers=0", "--workers"},
		{"--bindable-cluster-roles=view,a/b", "--bindable-cluster-roles"},
		{"--cluster-wide-roles=..", "--cluster-wide-roles"},
		{"--external-api-url=api.example.com:6443", "--external-api-url"},
		{"--external-api-url=ftp://api.example.com", "--external-api-url"},
	} {
		t.Run(c.arg, func(t *testing.T) {
			_, err := parse(t, nil, c.arg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %s", err, c.want)
			}
		})
	}
}

func TestEveryBadFlagIsReportedAtOnce(t *testing.T) {
	_, err := parse(t, nil, "--workers=0", "--webhook-port=-1", "--agent-address-cidrs=x")
	for _, name := range []string{"--workers", "--webhook-port", "--agent-address-cidrs"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

// TestLeaderElectionTimings: retry < renew < lease, checked only when
// leader election is on (as before the options package).
func TestLeaderElectionTimings(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"the defaults", []string{"--leader-elect"}, true},
		{"short timings of the fault tests", []string{"--leader-elect", "--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms"}, true},
		{"retry equal to renew", []string{"--leader-elect", "--leader-elect-renew-deadline=2s"}, false},
		{"renew equal to lease", []string{"--leader-elect", "--leader-elect-renew-deadline=15s"}, false},
		{"renew above lease", []string{"--leader-elect", "--leader-elect-lease-duration=5s"}, false},
		{"bad timings without leader election", []string{"--leader-elect=false", "--leader-elect-lease-duration=1s"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, nil, c.args...)
			if (err == nil) != c.ok {
				t.Fatalf("got %v, want ok=%t", err, c.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "--leader-elect-retry-period") {
				t.Fatalf("the error does not name the flags: %v", err)
			}
		})
	}
}

// TestTheChartsFlagsExist: every flag the chart's manager Deployment and
// `make run` pass is defined, so renaming one breaks this test, not an
// installation.
func TestTheChartsFlagsExist(t *testing.T) {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	NewManager(os.Getenv).AddFlags(fs)
	flagRE := regexp.MustCompile(`(?m)(?:^\s*- |go run \. |\s)--([a-z0-9-]+)=`)
	for _, file := range []string{"../../charts/itmanager/templates/deployment.yaml", "../../Makefile"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if strings.HasSuffix(file, "Makefile") {
			// Only the run target's manager command line.
			start := strings.Index(text, "go run . ")
			if start < 0 {
				t.Fatalf("%s: no `go run .` line", file)
			}
			text = text[start:]
			text = text[:strings.Index(text, "--zap-devel")]
		}
		found := 0
		for _, m := range flagRE.FindAllStringSubmatch(text, -1) {
			found++
			if fs.Lookup(m[1]) == nil {
				t.Errorf("%s passes --%s, which the manager does not define", file, m[1])
			}
		}
		if found < 4 {
			t.Fatalf("%s: found only %d flags; is the pattern still right?", file, found)
		}
	}
}
