// Package benchkit holds what the benchmark programs under test/bench share:
// starting the real manager binary against a real control plane, and
// measuring it (API writes by resource, resident memory, queue statistics).
package benchkit

import (
	"bufio"
	"bytes"
	"context"
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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// RuntimeCPUs is the number of CPUs of this machine.
func RuntimeCPUs() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return bytes.Count(data, []byte("processor\t:"))
}

// WaitHTTP waits until url answers 200.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
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

// Parallel runs f(0..n-1) on workers goroutines and returns the first error.
func Parallel(workers, n int, f func(int) error) error {
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

// Pct is the p-th percentile of d, rounded to milliseconds.
func Pct(d []time.Duration, p int) string {
	if len(d) == 0 {
		return "n/a"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(time.Millisecond).String()
}

// Writes counts API server write requests by resource.
type Writes map[string]float64

// Sub is how many more writes of resource w counted than o.
func (w Writes) Sub(o Writes, resource string) float64 { return w[resource] - o[resource] }

// Others lists, per minute, the resources other than skip that were written.
func (w Writes) Others(before Writes, minutes float64, skip ...string) string {
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

// Total is every write counted.
func (w Writes) Total() float64 {
	var t float64
	for _, v := range w {
		t += v
	}
	return t
}

// ScrapeWrites reads apiserver_request_total from the API server's /metrics
// and sums the mutating verbs by resource.
func ScrapeWrites(ctx context.Context, cs kubernetes.Interface) (Writes, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := Writes{}
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

// QueueStats summarizes a controller's reconciles and queue waits from the
// manager's metrics at url.
func QueueStats(ctx context.Context, url, controller string) string {
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

// RSSSampler follows the manager's resident memory.
type RSSSampler struct {
	pid int
	mu  sync.Mutex
	max int64
}

func (r *RSSSampler) read(field string) int64 {
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

func (r *RSSSampler) Run(ctx context.Context) {
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

// Peak is the highest resident memory seen.
func (r *RSSSampler) Peak() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.max, r.read("VmHWM"))
}

// Current is the resident memory now.
func (r *RSSSampler) Current() int64 { return r.read("VmRSS") }

// MiB formats bytes in MiB.
func MiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// NewRSSSampler follows the resident memory of process pid.
func NewRSSSampler(pid int) *RSSSampler { return &RSSSampler{pid: pid} }

// Logf prints a timestamped progress line.
func Logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Manager is the real manager binary running against a real control plane,
// under its generated RBAC.
type Manager struct {
	Env *testenv.Environment
	// Admin is a fast admin client; AdminConfig its config.
	Admin       client.WithWatch
	AdminConfig *rest.Config
	// CheckinURL is the check-in service; MetricsURL the plain-HTTP metrics.
	CheckinURL string
	MetricsURL string
	RSS        *RSSSampler
	// Work is a temporary directory removed by Stop; its logs/ survive in
	// $TMPDIR/itm-bench-last-logs.
	Work    string
	cmd     *exec.Cmd
	checkin *exec.Cmd
}

// checkinFlags are the flags StartManager hands the check-in service
// instead of the manager; the ones in bothFlags go to both.
var (
	checkinFlags = []string{"--agent-interval", "--checkin-min-interval", "--checkin-max-inflight"}
	bothFlags    = []string{"--checkin-stale-after", "--agent-address-cidrs"}
)

func flagName(arg string) string { name, _, _ := strings.Cut(arg, "="); return name }

// StartManager builds the manager, starts etcd and kube-apiserver (with the
// admission policies when asked), and runs the manager with args added to
// the benchmark defaults. Stop undoes everything.
func StartManager(ctx context.Context, admission bool, args ...string) (*Manager, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	m := &Manager{}
	if m.Work, err = os.MkdirTemp("", "itm-bench-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			m.Stop()
		}
	}()

	Logf("building the manager")
	managerBin := filepath.Join(m.Work, "manager")
	build := exec.Command("go", "build", "-o", managerBin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return nil, err
	}

	Logf("starting etcd and kube-apiserver (built from source)")
	if m.Env, err = testenv.Start(testenv.Options{LogDir: filepath.Join(m.Work, "logs"), AdmissionPolicies: admission}); err != nil {
		return nil, err
	}
	m.AdminConfig = rest.CopyConfig(m.Env.Config)
	m.AdminConfig.QPS, m.AdminConfig.Burst = 2000, 4000
	if m.Admin, err = client.NewWithWatch(m.AdminConfig, client.Options{Scheme: testenv.Scheme}); err != nil {
		return nil, err
	}
	mcfg, err := m.Env.ManagerConfig(ctx)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(m.Work, "manager.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(kubeconfig, mcfg, testenv.ManagerServiceAccount); err != nil {
		return nil, err
	}
	ports, err := testenv.FreePorts(3)
	if err != nil {
		return nil, err
	}
	m.CheckinURL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	probe := fmt.Sprintf("127.0.0.1:%d", ports[1])
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[2])
	m.MetricsURL = "http://" + metricsAddr + "/metrics"
	logFile, err := os.Create(filepath.Join(m.Work, "logs", "manager.log"))
	if err != nil {
		return nil, err
	}
	var managerArgs, checkinArgs []string
	for _, a := range args {
		switch {
		case slices.Contains(checkinFlags, flagName(a)):
			checkinArgs = append(checkinArgs, a)
		case slices.Contains(bothFlags, flagName(a)):
			checkinArgs = append(checkinArgs, a)
			managerArgs = append(managerArgs, a)
		default:
			managerArgs = append(managerArgs, a)
		}
	}
	all := append([]string{
		"--leader-elect=false", "--enable-webhooks=false", "--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=" + probe, "--checkin-url=" + m.CheckinURL,
	}, managerArgs...)
	m.cmd = exec.Command(managerBin, all...)
	m.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	m.RSS = NewRSSSampler(m.cmd.Process.Pid)
	go m.RSS.Run(ctx)
	if err := WaitHTTP(ctx, "http://"+probe+"/readyz", time.Minute); err != nil {
		return nil, fmt.Errorf("manager not ready: %w", err)
	}
	if err := m.startCheckin(ctx, root, ports[0], checkinArgs); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// startCheckin runs the check-in service (cmd/itmanager-checkin) as its
// own process under its own ServiceAccount, serving the manager's
// certificate from files, as in production.
func (m *Manager) startCheckin(ctx context.Context, root string, port int, args []string) error {
	Logf("building and starting the check-in service")
	bin := filepath.Join(m.Work, "itmanager-checkin")
	build := exec.Command("go", "build", "-o", bin, "./cmd/itmanager-checkin")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return err
	}
	cfg, err := m.Env.CheckinConfig(ctx)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(m.Work, "checkin.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(kubeconfig, cfg, testenv.CheckinServiceAccount); err != nil {
		return err
	}
	tlsDir := filepath.Join(m.Work, "checkin-tls")
	secret := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "itmanager-checkin-tls"}
	if err := testenv.MountSecret(ctx, m.Admin, secret, tlsDir, time.Minute, 30*time.Second); err != nil {
		return err
	}
	probes, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	probe := fmt.Sprintf("127.0.0.1:%d", probes[0])
	logFile, err := os.Create(filepath.Join(m.Work, "logs", "checkin.log"))
	if err != nil {
		return err
	}
	all := append([]string{
		fmt.Sprintf("--checkin-bind-address=127.0.0.1:%d", port), "--health-probe-bind-address=" + probe, "--metrics-bind-address=0",
		"--tls-cert-file=" + filepath.Join(tlsDir, "tls.crt"), "--tls-key-file=" + filepath.Join(tlsDir, "tls.key"),
	}, args...)
	m.checkin = exec.Command(bin, all...)
	m.checkin.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.checkin.Stdout, m.checkin.Stderr = logFile, logFile
	m.checkin.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.checkin.Start(); err != nil {
		return err
	}
	if err := WaitHTTP(ctx, "http://"+probe+"/readyz", time.Minute); err != nil {
		return fmt.Errorf("check-in service not ready: %w", err)
	}
	return nil
}

// Stop stops the manager and the control plane and removes the work
// directory, keeping its logs in $TMPDIR/itm-bench-last-logs.
func (m *Manager) Stop() {
	if m.checkin != nil && m.checkin.Process != nil {
		_ = m.checkin.Process.Signal(syscall.SIGTERM)
		_ = m.checkin.Wait()
	}
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		_ = m.cmd.Wait()
	}
	if m.Env != nil {
		_ = m.Env.Stop()
	}
	if m.Work != "" {
		last := filepath.Join(os.TempDir(), "itm-bench-last-logs")
		_ = os.RemoveAll(last)
		_ = os.Rename(filepath.Join(m.Work, "logs"), last)
		_ = os.RemoveAll(m.Work)
	}
}

// WaitEnrolled waits until every device's Secret exists and its Lease holds
// the hash of its token, and returns the tokens, the check-in base URL and the CA.
func WaitEnrolled(ctx context.Context, admin client.Client, names []string) (map[string]string, string, []byte, error) {
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
		Logf("  enrolled %d/%d", len(tokens), len(names))
		time.Sleep(5 * time.Second)
	}
	return nil, "", nil, fmt.Errorf("enrolment did not finish")
}

// CPUTime is the CPU time (user + system) the manager process has used.
func (m *Manager) CPUTime() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces, so cut at
	// its closing parenthesis): utime and stime are the 12th and 13th.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// Main parses the flags, runs a benchmark and exits non-zero on its error.
func Main(run func() error) {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
