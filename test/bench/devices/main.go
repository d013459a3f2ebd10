// Command devices benchmarks the Device inventory against the real control
// plane: N Devices with agents, simulated here, checking in through the real
// check-in service of the real manager binary (run under its generated RBAC).
// It reports sustained check-ins per second, API writes per minute at steady
// state by resource (from the API server's own apiserver_request_total),
// the manager's peak resident memory, and the delay from a device's last
// check-in to CheckedIn=False compared with the threshold.
//
//	go run ./test/bench/devices -devices 10000
package main

import (
	"bufio"
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
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var (
	devices     = flag.Int("devices", 10000, "Devices with simulated agents.")
	interval    = flag.Duration("interval", time.Minute, "Check-in interval of every agent.")
	steady      = flag.Duration("steady", 5*time.Minute, "Length of the steady-state measurement.")
	staleAfter  = flag.Duration("stale-after", 5*time.Minute, "The manager's --checkin-stale-after.")
	staleSample = flag.Int("stale-sample", 100, "Devices that stop checking in to measure the delay to CheckedIn=False.")
	senders     = flag.Int("senders", 64, "Concurrent simulated agents in flight.")
	out         = flag.String("out", "", "Also write the report to this file.")
	managerArgs = flag.String("manager-args", "", "Extra manager flags, space-separated (e.g. --pprof-bind-address=127.0.0.1:6060).")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "itm-bench-")
	if err != nil {
		return err
	}
	defer func() {
		// Keep the logs of the last run for a look afterwards.
		_ = os.RemoveAll(filepath.Join(os.TempDir(), "itm-bench-last-logs"))
		_ = os.Rename(filepath.Join(work, "logs"), filepath.Join(os.TempDir(), "itm-bench-last-logs"))
		_ = os.RemoveAll(work)
	}()

	logf("building the manager")
	managerBin := filepath.Join(work, "manager")
	build := exec.Command("go", "build", "-o", managerBin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return err
	}

	logf("starting etcd and kube-apiserver (built from source)")
	env, err := testenv.Start(testenv.Options{LogDir: filepath.Join(work, "logs")})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	adminCfg := rest.CopyConfig(env.Config)
	adminCfg.QPS, adminCfg.Burst = 2000, 4000
	admin, err := client.NewWithWatch(adminCfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		return err
	}
	mcfg, err := env.ManagerConfig(ctx)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(work, "manager.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(kubeconfig, mcfg, testenv.ManagerServiceAccount); err != nil {
		return err
	}

	ports, err := testenv.FreePorts(3)
	if err != nil {
		return err
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	probe := fmt.Sprintf("127.0.0.1:%d", ports[1])
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	logFile, err := os.Create(filepath.Join(work, "logs", "manager.log"))
	if err != nil {
		return err
	}
	args := []string{
		"--leader-elect=false", "--enable-webhooks=false", "--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=" + probe,
		fmt.Sprintf("--checkin-bind-address=127.0.0.1:%d", ports[0]), "--checkin-url=" + base,
		"--checkin-stale-after=" + staleAfter.String(), "--agent-interval=" + interval.String(),
	}
	args = append(args, strings.Fields(*managerArgs)...)
	mgr := exec.Command(managerBin, args...)
	mgr.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	mgr.Stdout, mgr.Stderr = logFile, logFile
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		return err
	}
	defer func() { _ = mgr.Process.Signal(syscall.SIGTERM); _ = mgr.Wait() }()
	rss := &rssSampler{pid: mgr.Process.Pid}
	go rss.run(ctx)
	if err := waitHTTP(ctx, "http://"+probe+"/readyz", time.Minute); err != nil {
		return fmt.Errorf("manager not ready: %w", err)
	}

	n := *devices
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%05d", i)
	}
	logf("creating %d Devices with agents", n)
	t0 := time.Now()
	if err := parallel(32, n, func(i int) error {
		return admin.Create(ctx, &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{"bench": "devices"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"}},
		})
	}); err != nil {
		return err
	}
	createDur := time.Since(t0)
	logf("created in %s; waiting for enrolment", createDur.Round(time.Millisecond))

	tokens, endpoint, ca, err := waitEnrolled(ctx, admin, names)
	if err != nil {
		return err
	}
	enrolDur := time.Since(t0)
	logf("all %d enrolled %s after the first create", n, enrolDur.Round(time.Millisecond))

	fleet := newFleet(names, tokens, endpoint, ca, *interval, *senders)
	go fleet.run(ctx)

	logf("warm-up: every agent checks in once, and every Device turns CheckedIn")
	if err := waitAllCheckedIn(ctx, admin, n, 3**interval+time.Minute); err != nil {
		return err
	}
	logf("warm-up done; steady state for %s", *steady)

	cs, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return err
	}
	before, err := scrapeWrites(ctx, cs)
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
	after, err := scrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	okN, failN := fleet.ok.Load()-okBefore, fleet.failed.Load()-failBefore
	lat := fleet.latencies()
	steadyRSS := rss.current()

	logf("stopping %d agents to measure the delay to CheckedIn=False (threshold %s)", *staleSample, *staleAfter)
	delays, err := measureStale(ctx, admin, cs, fleet, names, *staleSample, *staleAfter)
	if err != nil {
		return err
	}
	queue := managerQueueStats(ctx, "http://"+metricsAddr+"/metrics", "device")

	minutes := elapsed.Minutes()
	var b strings.Builder
	fmt.Fprintf(&b, "# Device inventory benchmark\n\n")
	fmt.Fprintf(&b, "%d Devices with agents, one check-in per %s each; manager --checkin-stale-after=%s, --last-checkin-refresh=5m.\n", n, *interval, *staleAfter)
	fmt.Fprintf(&b, "Control plane: etcd v3.6.16 + kube-apiserver v1.36.3 from source; %d cores.\n\n", runtimeCPUs())
	fmt.Fprintf(&b, "| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| create %d Devices | %s | |\n", n, createDur.Round(time.Millisecond))
	fmt.Fprintf(&b, "| all enrolled (Secret + Lease each) | %s after the first create | |\n", enrolDur.Round(time.Millisecond))
	fmt.Fprintf(&b, "| check-ins sustained | %.1f/s (%d ok, %d failed in %s) | %d devices / %s = %.1f/s |\n",
		float64(okN)/elapsed.Seconds(), okN, failN, elapsed.Round(time.Second), n, *interval, float64(n)/interval.Seconds())
	fmt.Fprintf(&b, "| check-in latency p50 / p99 / max | %s / %s / %s | |\n", pct(lat, 50), pct(lat, 99), pct(lat, 100))
	leaseW := after.sub(before, "leases")
	devW := after.sub(before, "devices")
	otherW := after.total() - before.total() - leaseW - devW
	fmt.Fprintf(&b, "| API writes/min: Leases | %.0f | renewals: %.0f |\n", leaseW/minutes, float64(n)/interval.Minutes())
	fmt.Fprintf(&b, "| API writes/min: Devices | %.0f | ≤ %.0f (one per device per 5 min) |\n", devW/minutes, float64(n)/5)
	fmt.Fprintf(&b, "| API writes/min: anything else | %.0f%s | 0 |\n", otherW/minutes, after.others(before, minutes, "leases", "devices"))
	fmt.Fprintf(&b, "| manager RSS: peak / at steady state | %s / %s | < 300 MiB |\n", mib(rss.peak()), mib(steadyRSS))
	fmt.Fprintf(&b, "| last check-in → CheckedIn=False, minus the threshold (n=%d): p50 / p99 / max | %s / %s / %s | ≈ 0 |\n",
		len(delays), pct(delays, 50), pct(delays, 99), pct(delays, 100))
	fmt.Fprintf(&b, "\nDevice controller over the whole run: %s\n", queue)
	fmt.Print("\n" + b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

func runtimeCPUs() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(data, []byte("processor\t:"))
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s", url, timeout)
}

func parallel(workers, n int, f func(int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// waitEnrolled waits until every device's Secret exists and its Lease holds
// the hash of its token, and returns the tokens.
func waitEnrolled(ctx context.Context, admin client.Client, names []string) (map[string]string, string, []byte, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		secrets := &corev1.SecretList{}
		leases := &coordinationv1.LeaseList{}
		if err := admin.List(ctx, secrets, client.InNamespace(testenv.DevicesNamespace)); err != nil {
			return nil, "", nil, err
		}
		if err := admin.List(ctx, leases, client.InNamespace(testenv.DevicesNamespace)); err != nil {
			return nil, "", nil, err
		}
		hashes := map[string]string{}
		for _, l := range leases.Items {
			hashes[l.Name] = l.Annotations[checkin.AnnotationTokenHash]
		}
		tokens := map[string]string{}
		var endpoint string
		var ca []byte
		for _, s := range secrets.Items {
			dev := strings.TrimSuffix(s.Name, "-agent")
			tok := string(s.Data[checkin.SecretKeyToken])
			if tok != "" && hashes[dev] == checkin.HashToken(tok) {
				tokens[dev] = tok
				endpoint, ca = string(s.Data[checkin.SecretKeyURL]), s.Data[checkin.SecretKeyCA]
			}
		}
		if len(tokens) == len(names) {
			base := endpoint[:strings.Index(endpoint, checkin.PathPrefix)]
			return tokens, base, ca, nil
		}
		logf("  enrolled %d/%d", len(tokens), len(names))
		time.Sleep(5 * time.Second)
	}
	return nil, "", nil, fmt.Errorf("enrolment did not finish")
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
		logf("  CheckedIn: %d/%d", fresh, n)
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

func (f *fleet) resetLatencies() { f.mu.Lock(); f.lat = nil; f.mu.Unlock() }

func (f *fleet) latencies() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lat)
}

func pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "n/a"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(time.Millisecond).String()
}

// writes counts API server write requests by resource.
type writes map[string]float64

func (w writes) sub(o writes, resource string) float64 { return w[resource] - o[resource] }

// others lists, per minute, the resources other than skip that were written.
func (w writes) others(before writes, minutes float64, skip ...string) string {
	var parts []string
	for r, v := range w {
		if d := v - before[r]; d > 0 && !slices.Contains(skip, r) {
			parts = append(parts, fmt.Sprintf("%s %.0f", r, d/minutes))
		}
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func (w writes) total() float64 {
	var t float64
	for _, v := range w {
		t += v
	}
	return t
}

// scrapeWrites reads apiserver_request_total from the API server's /metrics
// and sums the mutating verbs by resource.
func scrapeWrites(ctx context.Context, cs kubernetes.Interface) (writes, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := writes{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len("apiserver_request_total{"):], "} ")
		if !ok {
			continue
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		switch l["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		out[l["resource"]] += v
	}
	return out, nil
}

// measureStale stops sample agents and measures, per device, how long after
// its last renewal plus the threshold the Device turned CheckedIn=False.
func measureStale(ctx context.Context, admin client.WithWatch, cs kubernetes.Interface, f *fleet, names []string, sample int, threshold time.Duration) ([]time.Duration, error) {
	sample = min(sample, len(names))
	picked := map[string]bool{}
	for k := range sample {
		picked[names[k*len(names)/sample]] = true
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
		logf("  slowest: %s delay %s (renewed %s, seen %s, condition changed %s)", d.name, d.delay.Round(time.Millisecond),
			d.renew.Format("15:04:05.000"), d.seen.Format("15:04:05.000"), d.ltt.Format("15:04:05"))
	}
	return delays, nil
}

// managerQueueStats summarises the controller-runtime metrics of one
// controller: reconciles, errors, and time items waited in the workqueue.
func managerQueueStats(ctx context.Context, url, controller string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "metrics unavailable: " + err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var reconciles, errs, waitSum, waitCount float64
	var waitBuckets []string
	for _, line := range strings.Split(string(raw), "\n") {
		val := func() float64 {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
		switch {
		case strings.HasPrefix(line, "controller_runtime_reconcile_total{") && strings.Contains(line, `controller="`+controller+`"`):
			if strings.Contains(line, `result="error"`) {
				errs += val()
			}
			reconciles += val()
		case strings.HasPrefix(line, "workqueue_queue_duration_seconds_sum{") && strings.Contains(line, `name="`+controller+`"`):
			waitSum += val()
		case strings.HasPrefix(line, "workqueue_queue_duration_seconds_count{") && strings.Contains(line, `name="`+controller+`"`):
			waitCount += val()
		case strings.HasPrefix(line, "workqueue_queue_duration_seconds_bucket{") && strings.Contains(line, `name="`+controller+`"`) &&
			(strings.Contains(line, `le="0.01"`) || strings.Contains(line, `le="1"`) || strings.Contains(line, `le="10"`)):
			waitBuckets = append(waitBuckets, strings.TrimSpace(line[strings.Index(line, "le="):]))
		}
	}
	mean := 0.0
	if waitCount > 0 {
		mean = waitSum / waitCount
	}
	return fmt.Sprintf("%.0f reconciles (%.0f errors), mean wait in queue %.1f ms; cumulative waits %s",
		reconciles, errs, mean*1000, strings.Join(waitBuckets, ", "))
}

// rssSampler follows the manager's resident memory.
type rssSampler struct {
	pid int
	mu  sync.Mutex
	max int64
}

func (r *rssSampler) read(field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (r *rssSampler) run(ctx context.Context) {
	for {
		if hwm := r.read("VmHWM"); hwm > 0 {
			r.mu.Lock()
			r.max = max(r.max, hwm)
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (r *rssSampler) peak() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.max, r.read("VmHWM"))
}

func (r *rssSampler) current() int64 { return r.read("VmRSS") }

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
