// Command rollout benchmarks a MaintenanceWindow rollout against the real
// control plane and the real manager binary (under its generated RBAC): N
// agent devices under one window with maxUnavailable as a percentage; a
// simulated agent fleet checks in through the real check-in service, and
// finishes each authorized upgrade after a random delay. It reports the time
// from the window's opening until every device is done, against the ideal
// (batches × mean upgrade time), the peak concurrency seen, and the
// operator's CPU time during the rollout.
//
//	go run ./test/bench/rollout -devices 2000 -max-unavailable 10%
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/test/bench/benchkit"
)

var (
	devices        = flag.Int("devices", 2000, "Agent devices under the window.")
	maxUnavailable = flag.String("max-unavailable", "10%", "The window's rollout.maxUnavailable.")
	interval       = flag.Duration("interval", 10*time.Second, "Check-in interval of an idle agent.")
	minUpgrade     = flag.Duration("min-upgrade", 20*time.Second, "Shortest simulated upgrade.")
	maxUpgrade     = flag.Duration("max-upgrade", 40*time.Second, "Longest simulated upgrade.")
	out            = flag.String("out", "", "Also write the report to this file.")
	managerArgs    = flag.String("manager-args", "", "Extra manager flags, space-separated.")
)

func main() { benchkit.Main(run) }

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	m, err := benchkit.StartManager(ctx, false, append([]string{"--agent-interval=" + interval.String(), "--checkin-min-interval=" + benchMinInterval.String()},
		strings.Fields(*managerArgs)...)...)
	if err != nil {
		return err
	}
	defer m.Stop()
	admin := m.Admin

	n := *devices
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("agent-%05d", i)
	}
	benchkit.Logf("creating %d agent Devices running 1.0, target 2.0", n)
	if err := benchkit.Parallel(32, n, func(i int) error {
		return admin.Create(ctx, &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{"ring": "bench"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}},
		})
	}); err != nil {
		return err
	}
	tokens, base, ca, err := benchkit.WaitEnrolled(ctx, admin, names)
	if err != nil {
		return err
	}
	f := newFleet(names, tokens, base, ca)
	for i := range names {
		go f.agent(ctx, i)
	}
	benchkit.Logf("warm-up: every agent checks in and turns CheckedIn")
	if err := waitCheckedIn(ctx, admin, n); err != nil {
		return err
	}

	// A daily window opening at the next whole minute that leaves a margin.
	open := time.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute)
	mu := intstr.Parse(*maxUnavailable)
	benchkit.Logf("window opens at %s; maxUnavailable %s", open.Format(time.RFC3339), mu.String())
	if err := admin.Create(ctx, &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "bench"}},
			Windows:  []itmv1.Window{{Schedule: fmt.Sprintf("%d %d * * *", open.Minute(), open.Hour()), Duration: metav1.Duration{Duration: 4 * time.Hour}}},
			Rollout:  itmv1.Rollout{MaxUnavailable: &mu, MaxFailures: ptr(int32(n))},
		},
	}); err != nil {
		return err
	}
	time.Sleep(time.Until(open))
	cpu0 := m.CPUTime()
	peak, err := waitDone(ctx, admin, n, time.Hour)
	if err != nil {
		return err
	}
	done := time.Since(open)
	cpu := m.CPUTime() - cpu0

	limit, _ := intstr.GetScaledValueFromIntOrPercent(&mu, n, false)
	limit = max(limit, 1)
	batches := int(math.Ceil(float64(n) / float64(limit)))
	mean := (*minUpgrade + *maxUpgrade) / 2
	ideal := time.Duration(batches) * mean

	var b strings.Builder
	fmt.Fprintf(&b, "# MaintenanceWindow rollout benchmark\n\n")
	fmt.Fprintf(&b, "%d agent Devices under one window, maxUnavailable %s (= %d); simulated agents check in every %s when idle, at once when an upgrade changes state, and finish an upgrade after a uniformly random %s–%s.\n",
		n, mu.String(), limit, *interval, *minUpgrade, *maxUpgrade)
	fmt.Fprintf(&b, "Control plane: etcd v3.6.16 + kube-apiserver v1.36.3 from source; %d cores. Reproduce: `go run ./test/bench/rollout -devices %d -max-unavailable %s` (or `make bench-rollout`).\n\n",
		benchkit.RuntimeCPUs(), n, mu.String())
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| window open → all %d devices Succeeded | %s |\n", n, done.Round(time.Second))
	fmt.Fprintf(&b, "| ideal: %d batches × mean upgrade %s | %s |\n", batches, mean, ideal)
	fmt.Fprintf(&b, "| ratio actual / ideal | %.2f |\n", done.Seconds()/ideal.Seconds())
	fmt.Fprintf(&b, "| peak devices in flight (sampled every 250 ms) | %d (limit %d) |\n", peak, limit)
	fmt.Fprintf(&b, "| operator CPU during the rollout | %s (%.0f%% of one core on average) |\n", cpu.Round(time.Millisecond), 100*cpu.Seconds()/done.Seconds())
	fmt.Fprintf(&b, "| check-ins: ok / failed | %d / %d |\n", f.ok.Load(), f.failed.Load())
	fmt.Fprintf(&b, "| manager RSS peak | %s |\n", benchkit.MiB(m.RSS.Peak()))
	fmt.Fprintf(&b, "\nMaintenanceWindow controller: %s\n", benchkit.QueueStats(ctx, m.MetricsURL, "maintenancewindow"))
	fmt.Print("\n" + b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func waitCheckedIn(ctx context.Context, admin client.Client, n int) error {
	deadline := time.Now().Add(15 * time.Minute)
	for time.Now().Before(deadline) {
		list := &itmv1.DeviceList{}
		if err := admin.List(ctx, list, client.MatchingLabels{"ring": "bench"}); err != nil {
			return err
		}
		ready := 0
		for _, d := range list.Items {
			for _, c := range d.Status.Conditions {
				if c.Type == itmv1.DeviceConditionCheckedIn && c.Status == metav1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == n {
			return nil
		}
		benchkit.Logf("  checked in %d/%d", ready, n)
		time.Sleep(3 * time.Second)
	}
	return fmt.Errorf("devices did not all check in")
}

// waitDone polls until every device's upgrade Succeeded and returns the
// highest number of devices seen in flight at once.
func waitDone(ctx context.Context, admin client.Client, n int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	peak := 0
	lastLog := time.Now()
	for time.Now().Before(deadline) {
		list := &itmv1.DeviceList{}
		if err := admin.List(ctx, list, client.MatchingLabels{"ring": "bench"}); err != nil {
			return peak, err
		}
		succeeded, flight, failed := 0, 0, 0
		for _, d := range list.Items {
			if u := d.Status.Upgrade; u != nil {
				switch u.State {
				case itmv1.UpgradeStateSucceeded:
					succeeded++
				case itmv1.UpgradeStateAuthorized, itmv1.UpgradeStateInProgress:
					flight++
				case itmv1.UpgradeStateFailed:
					failed++
				}
			}
		}
		peak = max(peak, flight)
		if time.Since(lastLog) > 15*time.Second {
			benchkit.Logf("  %d succeeded, %d in flight, %d failed", succeeded, flight, failed)
			lastLog = time.Now()
		}
		if succeeded == n {
			return peak, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return peak, fmt.Errorf("rollout did not finish within %s", timeout)
}

// fleet simulates the agents: each checks in every interval when idle and
// at once when its upgrade changes state, like itmanager-agent.
type fleet struct {
	names      []string
	tokens     map[string]string
	base       string
	client     *http.Client
	ok, failed atomic.Int64
}

func newFleet(names []string, tokens map[string]string, base string, ca []byte) *fleet {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &fleet{names: names, tokens: tokens, base: base, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConns: 256, MaxIdleConnsPerHost: 256,
	}}}
}

func (f *fleet) agent(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	version := "1.0"
	var seq uint64
	var report *checkin.UpgradeReport
	var upgradeDone time.Time
	// Spread the first check-ins over one interval.
	wait := time.Duration(rng.Int64N(int64(*interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = *interval
		if !upgradeDone.IsZero() && !time.Now().Before(upgradeDone) {
			version = "2.0"
			report = &checkin.UpgradeReport{State: itmv1.UpgradeStateSucceeded, TargetVersion: "2.0", Message: "upgraded"}
			upgradeDone = time.Time{}
		}
		seq++
		res, ok := f.checkIn(ctx, i, checkin.Request{Sequence: seq, Facts: checkin.Facts{OSVersion: version, AgentVersion: "bench"}, Upgrade: report})
		if !ok {
			continue // the report is sent again
		}
		report = nil
		if res.Upgrade == nil || !upgradeDone.IsZero() {
			continue
		}
		switch res.Upgrade.State {
		case itmv1.UpgradeStateAuthorized:
			report = &checkin.UpgradeReport{State: itmv1.UpgradeStateInProgress, TargetVersion: res.Upgrade.TargetVersion}
			// Report promptly, but not sooner than the service accepts.
			wait = benchMinInterval + 100*time.Millisecond
		case itmv1.UpgradeStateInProgress:
			d := *minUpgrade + time.Duration(rng.Int64N(int64(*maxUpgrade-*minUpgrade)+1))
			upgradeDone = time.Now().Add(d)
			wait = d
		}
	}
}

// benchMinInterval is the check-in service's --checkin-min-interval here.
const benchMinInterval = time.Second

func (f *fleet) checkIn(ctx context.Context, i int, r checkin.Request) (*checkin.Response, bool) {
	body, _ := json.Marshal(r)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, checkin.Endpoint(f.base, f.names[i]), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.tokens[f.names[i]])
	resp, err := f.client.Do(req)
	if err != nil {
		f.failed.Add(1)
		return nil, false
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		f.failed.Add(1)
		return nil, false
	}
	f.ok.Add(1)
	out := &checkin.Response{}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, false
	}
	return out, true
}
