package main

import (
	"context"
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

// parse is what main does before run: defaults, then flags.
func parse(t *testing.T, args ...string) *options {
	t.Helper()
	o := newOptions()
	fs := flag.NewFlagSet("checkin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return o
}

// TestRunRefusesLimitsAgentsCannotKeep: the agent jitters its interval by
// ±10%, so a minimum interval above 90% of it would refuse punctual agents.
func TestRunRefusesLimitsAgentsCannotKeep(t *testing.T) {
	for name, args := range map[string][]string{
		"no minimum interval":                      {"--agent-interval=1m", "--checkin-min-interval=0s"},
		"a minimum interval equal to the interval": {"--agent-interval=10s", "--checkin-min-interval=10s"},
		"a minimum interval above 90%":             {"--agent-interval=10s", "--checkin-min-interval=9500ms"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), parse(t, args...))
			if err == nil || !strings.Contains(err.Error(), "--checkin-min-interval must be positive and at most 90% of --agent-interval") {
				t.Fatalf("got %v", err)
			}
		})
	}
	if err := run(context.Background(), parse(t, "--agent-address-cidrs=10.0.0.0/8,nonsense")); err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("a bad --agent-address-cidrs: got %v", err)
	}
}

func TestDefaults(t *testing.T) {
	o := parse(t)
	if err := o.validate(); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	want := &options{
		addr: ":9444", probeAddr: ":8081", metricsAddr: ":8080",
		certFile: "/etc/itmanager-checkin/tls/tls.crt", keyFile: "/etc/itmanager-checkin/tls/tls.key",
		devicesNS: "itmanager-devices", staleAfter: 5 * time.Minute, interval: time.Minute,
		minInterval: 10 * time.Second, maxInFlight: 64, apiQPS: 300, apiBurst: 600,
	}
	o.zap = want.zap
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v, want %+v", o, want)
	}
	o = parse(t, "--agent-address-cidrs=10.1.2.3/16,,fd00::/8", "--metrics-bind-address=0")
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}; !reflect.DeepEqual(o.addressRanges, want) {
		t.Fatalf("ranges: got %v, want %v", o.addressRanges, want)
	}
}

// TestBadValuesAreRefusedByName: each bad value is refused with an error
// that names its flag, before the service connects to anything.
func TestBadValuesAreRefusedByName(t *testing.T) {
	for _, c := range []struct{ arg, want string }{
		{"--checkin-bind-address=9444", "--checkin-bind-address"},
		{"--health-probe-bind-address=0", "--health-probe-bind-address"},
		{"--metrics-bind-address=localhost", "--metrics-bind-address"},
		{"--tls-cert-file=", "--tls-cert-file"},
		{"--tls-key-file=", "--tls-key-file"},
		{"--devices-namespace=Devices", "--devices-namespace"},
		{"--checkin-stale-after=0s", "--checkin-stale-after"},
		{"--checkin-max-inflight=0", "--checkin-max-inflight"},
		{"--agent-address-cidrs=10.0.0.1", "--agent-address-cidrs"},
		{"--kube-api-qps=+Inf", "--kube-api-qps"},
		{"--kube-api-burst=-1", "--kube-api-burst"},
	} {
		t.Run(c.arg, func(t *testing.T) {
			if err := parse(t, c.arg).validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %s", err, c.want)
			}
		})
	}
}

// TestTheChartsFlagsExist: every flag the chart's check-in Deployment
// passes is defined, so renaming one breaks this test, not an installation.
func TestTheChartsFlagsExist(t *testing.T) {
	fs := flag.NewFlagSet("checkin", flag.ContinueOnError)
	newOptions().addFlags(fs)
	data, err := os.ReadFile("../../charts/itmanager/templates/checkin-deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := regexp.MustCompile(`(?m)^\s*- --([a-z0-9-]+)=`).FindAllStringSubmatch(string(data), -1)
	if len(found) < 4 {
		t.Fatalf("found only %d flags in the chart; is the pattern still right?", len(found))
	}
	for _, m := range found {
		if fs.Lookup(m[1]) == nil {
			t.Errorf("the chart passes --%s, which the check-in service does not define", m[1])
		}
	}
}
