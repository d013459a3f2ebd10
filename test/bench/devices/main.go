// Command devices benchmarks the Device inventory against the real control
// plane: N Devices with agents, simulated here, checking in through the real
// check-in service of the real manager binary (run under its generated RBAC).
// It reports sustained check-ins per second, API Writes per minute at steady
// state by resource (from the API server's own apiserver_request_total),
// the manager's peak resident memory, and the delay from a device's last
// check-in to CheckedIn=False compared with the threshold.
//
//	go run ./test/bench/devices -devices 10000
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
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
	"github.com/itmanager-io/itmanager/test/bench/benchkit"
)

var (
	devices     = flag.Int("devices", 10000, "Devices with simulated agents.")
	interval    = flag.Duration("interval", time.Minute, "Check-in interval of every agent.")
	steady      = flag.Duration("steady", 5*time.Minute, "Length of the steady-state measurement.")
	staleAfter  = flag.Duration("stale-after", 5*time.Minute, "The manager's --checkin-stale-after.")
	staleSample = flag.Int("stale-sample", 100, "Devices that stop checking in to measure the delay to CheckedIn=False.")
	senders     = flag.Int("senders", 64, "Concurrent simulated agents in flight.")
	out         = flag.String("out", "", "Also write the report to this file.")
	flood       = flag.Duration("flood", time.Minute, "After the steady state, one device's token floods the check-in service for this long (0 skips it).")
	floodConns  = flag.Int("flood-senders", 8, "Concurrent senders of the flood, each as fast as it is answered.")
	managerArgs = flag.String("manager-args", "", "Extra manager flags, space-separated (e.g. --pprof-bind-address=127.0.0.1:6060).")
)

func main() { benchkit.Main(run) }

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	m, err := benchkit.StartManager(ctx, false, append([]string{
		"--checkin-stale-after=" + staleAfter.String(), "--agent-interval=" + interval.String(),
	}, strings.Fields(*managerArgs)...)...)
	if err != nil {
		return err
	}
	defer m.Stop()
	admin, adminCfg, rss, metricsAddr := m.Admin, m.AdminConfig, m.RSS, m.MetricsURL

	n := *devices
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%05d", i)
	}
	benchkit.Logf("creating %d Devices with agents", n)
	t0 := time.Now()
	if err := benchkit.Parallel(32, n, func(i int) error {
		return admin.Create(ctx, &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{"bench": "devices"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"}},
		})
	}); err != nil {
		return err
	}
	createDur := time.Since(t0)
	benchkit.Logf("created in %s; waiting for enrolment", createDur.Round(time.Millisecond))

	tokens, endpoint, ca, err := benchkit.WaitEnrolled(ctx, admin, names)
	if err != nil {
		return err
	}
	enrolDur := time.Since(t0)
	benchkit.Logf("all %d enrolled %s after the first create", n, enrolDur.Round(time.Millisecond))

	fleet := newFleet(names, tokens, endpoint, ca, *interval, *senders)
	go fleet.run(ctx)

	benchkit.Logf("warm-up: every agent checks in once, and every Device turns CheckedIn")
	if err := waitAllCheckedIn(ctx, admin, n, 3**interval+time.Minute); err != nil {
		return err
	}
	benchkit.Logf("warm-up done; steady state for %s", *steady)

	cs, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return err
	}
	before, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	okBefore, failBefore := fleet.ok.Load(), fleet.failed.Load()
	fleet.resetLatencies()
	start := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*steady):
	}
	elapsed := time.Since(start)
	after, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	okN, failN := fleet.ok.Load()-okBefore, fleet.failed.Load()-failBefore
	lat := fleet.latencies()
	steadyRSS := rss.Current()

	var fl floodResult
	if *flood > 0 {
		benchkit.Logf("flood: %d senders with %s's token for %s while the other agents go on", *floodConns, names[0], *flood)
		// The flooded device leaves the fleet for good: its sequence runs
		// ahead of what the service accepted, as an attacker's would.
		fleet.stopped[0].Store(true)
		fleet.resetLatencies()
		beforeFlood, err := benchkit.ScrapeWrites(ctx, cs)
		if err != nil {
			return err
		}
		fl = fleet.flood(ctx, 0, *floodConns, *flood)
		afterFlood, err := benchkit.ScrapeWrites(ctx, cs)
		if err != nil {
			return err
		}
		fl.leaseWrites = afterFlood.Sub(beforeFlood, "leases")
		fl.others = fleet.latencies()
	}

	benchkit.Logf("stopping %d agents to measure the delay to CheckedIn=False (threshold %s)", *staleSample, *staleAfter)
	delays, err := measureStale(ctx, admin, cs, fleet, names, *staleSample, *staleAfter)
	if err != nil {
		return err
	}
	queue := benchkit.QueueStats(ctx, metricsAddr, "device")

	minutes := elapsed.Minutes()
	var b strings.Builder
	fmt.Fprintf(&b, "# Device inventory benchmark\n\n")
	fmt.Fprintf(&b, "%d Devices with agents, one check-in per %s each; manager --checkin-stale-after=%s, --last-checkin-refresh=5m.\n", n, *interval, *staleAfter)
	fmt.Fprintf(&b, "Control plane: etcd v3.6.16 + kube-apiserver v1.36.3 from source; %d cores.\n\n", benchkit.RuntimeCPUs())
	fmt.Fprintf(&b, "| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| create %d Devices | %s | |\n", n, createDur.Round(time.Millisecond))
	fmt.Fprintf(&b, "| all enrolled (Secret + Lease each) | %s after the first create | |\n", enrolDur.Round(time.Millisecond))
	fmt.Fprintf(&b, "| check-ins sustained | %.1f/s (%d ok, %d failed in %s) | %d devices / %s = %.1f/s |\n",
		float64(okN)/elapsed.Seconds(), okN, failN, elapsed.Round(time.Second), n, *interval, float64(n)/interval.Seconds())
	fmt.Fprintf(&b, "| check-in latency p50 / p99 / max | %s / %s / %s | |\n", benchkit.Pct(lat, 50), benchkit.Pct(lat, 99), benchkit.Pct(lat, 100))
	leaseW := after.Sub(before, "leases")
	devW := after.Sub(before, "devices")
	otherW := after.Total() - before.Total() - leaseW - devW
	fmt.Fprintf(&b, "| API Writes/min: Leases | %.0f | renewals: %.0f |\n", leaseW/minutes, float64(n)/interval.Minutes())
	fmt.Fprintf(&b, "| API Writes/min: Devices | %.0f | ≤ %.0f (one per device per 5 min) |\n", devW/minutes, float64(n)/5)
	fmt.Fprintf(&b, "| API Writes/min: anything else | %.0f%s | 0 |\n", otherW/minutes, after.Others(before, minutes, "leases", "devices"))
	fmt.Fprintf(&b, "| manager RSS: peak / at steady state | %s / %s | < 300 MiB |\n", benchkit.MiB(rss.Peak()), benchkit.MiB(steadyRSS))
	fmt.Fprintf(&b, "| last check-in → CheckedIn=False, minus the threshold (n=%d): p50 / p99 / max | %s / %s / %s | ≈ 0 |\n",
		len(delays), benchkit.Pct(delays, 50), benchkit.Pct(delays, 99), benchkit.Pct(delays, 100))
	if *flood > 0 {
		fmt.Fprintf(&b, "| flood from one token (%d senders, %s): answers | %d × 429, %d × 200, %d other | all but one per %s are 429 |\n",
			*floodConns, *flood, fl.tooMany, fl.ok, fl.other, "--checkin-min-interval")
		fmt.Fprintf(&b, "| flood: the other agents' check-in latency p50 / p99 / max (n=%d) | %s / %s / %s | as in the steady state |\n",
			len(fl.others), benchkit.Pct(fl.others, 50), benchkit.Pct(fl.others, 99), benchkit.Pct(fl.others, 100))
		fmt.Fprintf(&b, "| flood: Lease writes/min (all devices) | %.0f | renewals: %.0f |\n", fl.leaseWrites/flood.Minutes(), float64(n-1)/interval.Minutes())
	}
	fmt.Fprintf(&b, "\nDevice controller over the whole run: %s\n", queue)
	fmt.Print("\n" + b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

func waitAllCheckedIn(ctx context.Context, admin client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		list := &itmv1.DeviceList{}
		if err := admin.List(ctx, list, client.MatchingLabels{"bench": "devices"}); err != nil {
			return err
		}
		fresh := 0
		for _, d := range list.Items {
			if meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn) && d.Status.Observed != nil {
				fresh++
			}
		}
		if fresh == n {
			return nil
		}
		benchkit.Logf("  CheckedIn: %d/%d", fresh, n)
		time.Sleep(10 * time.Second)
	}
	return fmt.Errorf("not every device turned CheckedIn within %s", timeout)
}

// fleet simulates agents: device i checks in at offset i·interval/N within
// every interval, so load is spread as a real fleet spreads it.
type fleet struct {
	names    []string
	tokens   map[string]string
	base     string
	interval time.Duration
	senders  int
	client   *http.Client
	seq      []atomic.Uint64
	stopped  []atomic.Bool
	ok       atomic.Int64
	failed   atomic.Int64

	mu  sync.Mutex
	lat []time.Duration
}

func newFleet(names []string, tokens map[string]string, base string, ca []byte, interval time.Duration, senders int) *fleet {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &fleet{
		names: names, tokens: tokens, base: base, interval: interval, senders: senders,
		seq: make([]atomic.Uint64, len(names)), stopped: make([]atomic.Bool, len(names)),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConns:    senders * 2, MaxIdleConnsPerHost: senders * 2,
		}},
	}
}

func (f *fleet) run(ctx context.Context) {
	due := make(chan int, f.senders*4)
	for range f.senders {
		go func() {
			for i := range due {
				f.checkIn(ctx, i)
			}
		}()
	}
	n := len(f.names)
	start := time.Now()
	for k := 0; ; k++ {
		i := k % n
		at := start.Add(time.Duration(k) * f.interval / time.Duration(n))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				close(due)
				return
			case <-time.After(d):
			}
		}
		if !f.stopped[i].Load() {
			due <- i
		}
	}
}

func (f *fleet) checkIn(ctx context.Context, i int) {
	addr := fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
	body, _ := json.Marshal(checkin.Request{
		Sequence: f.seq[i].Add(1),
		Facts:    checkin.Facts{OSVersion: "24.04", Hostname: f.names[i], Addresses: []string{addr}, AgentVersion: "bench"},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, checkin.Endpoint(f.base, f.names[i]), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.tokens[f.names[i]])
	t := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		f.failed.Add(1)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.failed.Add(1)
		return
	}
	f.ok.Add(1)
	f.mu.Lock()
	f.lat = append(f.lat, time.Since(t))
	f.mu.Unlock()
}

// floodResult counts the answers one token's flood got.
type floodResult struct {
	tooMany, ok, other int64
	leaseWrites        float64
	others             []time.Duration // the rest of the fleet's latencies meanwhile
}

// flood sends check-ins for device i from senders goroutines, each as fast
// as it is answered, for d, and counts the answers.
func (f *fleet) flood(ctx context.Context, i, senders int, d time.Duration) floodResult {
	var tooMany, ok, other atomic.Int64
	fctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				body, _ := json.Marshal(checkin.Request{Sequence: f.seq[i].Add(1),
					Facts: checkin.Facts{OSVersion: "24.04", Hostname: f.names[i], AgentVersion: "flood"}})
				req, _ := http.NewRequestWithContext(fctx, http.MethodPost, checkin.Endpoint(f.base, f.names[i]), bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+f.tokens[f.names[i]])
				resp, err := f.client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusTooManyRequests:
					tooMany.Add(1)
				case http.StatusOK:
					ok.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return floodResult{tooMany: tooMany.Load(), ok: ok.Load(), other: other.Load()}
}

func (f *fleet) resetLatencies() { f.mu.Lock(); f.lat = nil; f.mu.Unlock() }

func (f *fleet) latencies() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lat)
}

// measureStale stops sample agents and measures, per device, how long after
// its last renewal plus the threshold the Device turned CheckedIn=False.
func measureStale(ctx context.Context, admin client.WithWatch, cs kubernetes.Interface, f *fleet, names []string, sample int, threshold time.Duration) ([]time.Duration, error) {
	sample = min(sample, len(names))
	picked := map[string]bool{}
	for k := range sample {
		// Mid-points of equal slices: never names[0], which the flood
		// phase took out of the fleet.
		picked[names[(k*len(names)+len(names)/2)/sample]] = true
	}
	w, err := admin.Watch(ctx, &itmv1.DeviceList{}, client.MatchingLabels{"bench": "devices"})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	for i, n := range names {
		if picked[n] {
			f.stopped[i].Store(true)
		}
	}
	seen := map[string]time.Time{}
	deadline := time.After(threshold + 2*f.interval + time.Minute)
	for len(seen) < len(picked) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("only %d of %d stopped devices turned CheckedIn=False", len(seen), len(picked))
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("watch closed")
			}
			if ev.Type != watch.Modified {
				continue
			}
			d := ev.Object.(*itmv1.Device)
			if picked[d.Name] && seen[d.Name].IsZero() && meta.IsStatusConditionFalse(d.Status.Conditions, itmv1.DeviceConditionCheckedIn) {
				seen[d.Name] = time.Now()
			}
		}
	}
	type detail struct {
		name             string
		delay            time.Duration
		renew, seen, ltt time.Time
	}
	var details []detail
	var delays []time.Duration
	for n, at := range seen {
		lease, err := cs.CoordinationV1().Leases(testenv.DevicesNamespace).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("lease of %s: %w", n, err)
		}
		if lease.Spec.RenewTime == nil {
			return nil, fmt.Errorf("lease of %s was never renewed", n)
		}
		d := &itmv1.Device{}
		if err := admin.Get(ctx, client.ObjectKey{Name: n}, d); err != nil {
			return nil, err
		}
		var ltt time.Time
		if c := meta.FindStatusCondition(d.Status.Conditions, itmv1.DeviceConditionCheckedIn); c != nil {
			ltt = c.LastTransitionTime.Time
		}
		delay := at.Sub(lease.Spec.RenewTime.Add(threshold))
		delays = append(delays, delay)
		details = append(details, detail{n, delay, lease.Spec.RenewTime.Time, at, ltt})
	}
	slices.SortFunc(details, func(a, b detail) int { return int(b.delay - a.delay) })
	for _, d := range details[:min(5, len(details))] {
		benchkit.Logf("  slowest: %s delay %s (renewed %s, seen %s, condition changed %s)", d.name, d.delay.Round(time.Millisecond),
			d.renew.Format("15:04:05.000"), d.seen.Format("15:04:05.000"), d.ltt.Format("15:04:05"))
	}
	return delays, nil
}

// QueueStats summarises the controller-runtime metrics of one
// controller: reconciles, errors, and time items waited in the workqueue.
