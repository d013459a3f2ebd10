package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// logf prints a timestamped progress line.
func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
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

// pct is the p-th percentile of d (nearest rank); zero when d is empty.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)]
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// pcts formats p50 / p99 / max of d.
func pcts(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a (no samples)"
	}
	return fmt.Sprintf("%s / %s / %s (n=%d)", ms(pct(d, 50)), ms(pct(d, 99)), ms(pct(d, 100)), len(d))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// --- Prometheus text ---------------------------------------------------

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []sample

// parseMetrics reads the Prometheus text format (enough of it: no escapes
// in label values are needed for the metrics read here).
func parseMetrics(raw []byte) metrics {
	var out metrics
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		var rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			s.name = line[:i]
			for _, kv := range splitLabels(line[i+1 : j]) {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			s.name, rest = f[0], f[1]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

func splitLabels(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			if i == 0 || s[i-1] != '\\' {
				inQ = !inQ
			}
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sum adds the samples called name whose labels include match.
func (m metrics) sum(name string, match map[string]string) float64 {
	var t float64
	for _, s := range m {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			t += s.value
		}
	}
	return t
}

// by sums the samples called name, grouped by the value of label.
func (m metrics) by(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name != name {
			continue
		}
		out[s.labels[label]] += s.value
	}
	return out
}

func scrapeURL(ctx context.Context, url string) (metrics, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseMetrics(raw), nil
}

// --- processes ----------------------------------------------------------

// proc is a child process whose memory and CPU are followed.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	peak int64
}

func (p *proc) status(field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
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

func (p *proc) follow(ctx context.Context) {
	for {
		if hwm := p.status("VmHWM"); hwm > 0 {
			p.mu.Lock()
			p.peak = max(p.peak, hwm)
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Peak is the highest resident memory (VmHWM) seen.
func (p *proc) Peak() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.peak, p.status("VmHWM"))
}

// CPU is the CPU time (user + system) the process has used.
func (p *proc) CPU() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
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

// --- the cluster --------------------------------------------------------

// binaries are built once per run, from the working tree.
var binaries struct {
	once             sync.Once
	dir, manager, ci string
	err              error
}

func buildBinaries(root string) (string, string, error) {
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "itm-bench-bin-")
		if binaries.err != nil {
			return
		}
		binaries.manager = filepath.Join(binaries.dir, "manager")
		binaries.ci = filepath.Join(binaries.dir, "itmanager-checkin")
		for _, b := range [][2]string{{binaries.manager, "."}, {binaries.ci, "./cmd/itmanager-checkin"}} {
			logf("building %s", b[1])
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
			if binaries.err = cmd.Run(); binaries.err != nil {
				return
			}
		}
	})
	return binaries.manager, binaries.ci, binaries.err
}

type clusterOptions struct {
	replicas    int
	managerArgs []string
	checkinArgs []string
}

// cluster is etcd + kube-apiserver (built from source, with the admission
// policies and an audit log of every write), the real manager binary as
// replicas with leader election under its generated RBAC, and the real
// check-in service under its own ServiceAccount.
type cluster struct {
	env       *testenv.Environment
	admin     client.WithWatch
	adminCfg  *rest.Config
	cs        kubernetes.Interface
	work      string
	managers  []*proc
	metrics   []string // each replica's plain-HTTP metrics URL
	checkin   *proc
	audit     *auditLog
	ctx       context.Context
	cancel    context.CancelFunc
	logDir    string
	checkinAt string
	// watchRestarts counts the benchmark's own watches opened again after
	// they ended, for any reason (follow).
	watchRestarts atomic.Int64
}

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func startCluster(parent context.Context, opts clusterOptions) (*cluster, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	managerBin, checkinBin, err := buildBinaries(root)
	if err != nil {
		return nil, err
	}
	c := &cluster{}
	c.ctx, c.cancel = context.WithCancel(parent)
	if c.work, err = os.MkdirTemp("", "itm-bench-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	c.logDir = filepath.Join(c.work, "logs")
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	policy := filepath.Join(c.work, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	auditPath := filepath.Join(c.logDir, "audit.log")
	logf("starting etcd and kube-apiserver (audit log of writes on)")
	if c.env, err = testenv.Start(testenv.Options{LogDir: c.logDir, AdmissionPolicies: true, APIServerFlags: map[string]string{
		"audit-policy-file": policy, "audit-log-path": auditPath, "audit-log-format": "json", "audit-log-maxsize": "0",
	}}); err != nil {
		return nil, err
	}
	c.audit = tailAudit(c.ctx, auditPath)
	c.adminCfg = rest.CopyConfig(c.env.Config)
	c.adminCfg.QPS, c.adminCfg.Burst = 2000, 4000
	if c.admin, err = client.NewWithWatch(c.adminCfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		return nil, err
	}
	if c.cs, err = kubernetes.NewForConfig(c.adminCfg); err != nil {
		return nil, err
	}
	mcfg, err := c.env.ManagerConfig(c.ctx)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.work, "manager.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(kubeconfig, mcfg, testenv.ManagerServiceAccount); err != nil {
		return nil, err
	}
	ports, err := testenv.FreePorts(1 + 2*opts.replicas)
	if err != nil {
		return nil, err
	}
	c.checkinAt = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
	var probes []string
	for r := range opts.replicas {
		probe := fmt.Sprintf("127.0.0.1:%d", ports[1+2*r])
		metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[2+2*r])
		c.metrics = append(c.metrics, "http://"+metricsAddr+"/metrics")
		args := append([]string{
			fmt.Sprintf("--leader-elect=%t", opts.replicas > 1), "--enable-webhooks=false",
			"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
			"--health-probe-bind-address=" + probe, "--checkin-url=" + c.checkinAt,
		}, opts.managerArgs...)
		if r == 0 && *pprofAddr != "" {
			args = append(args, "--pprof-bind-address="+*pprofAddr)
		}
		p, err := c.startProcess(fmt.Sprintf("manager-%d", r), managerBin, kubeconfig, args)
		if err != nil {
			return nil, err
		}
		c.managers = append(c.managers, p)
		probes = append(probes, "http://"+probe+"/readyz")
	}
	logf("started %d manager replica(s) (leader election %t)", opts.replicas, opts.replicas > 1)
	for _, u := range probes {
		if err := waitHTTP(c.ctx, u, time.Minute); err != nil {
			return nil, fmt.Errorf("manager not ready: %w", err)
		}
	}
	if err := c.startCheckin(ports[0], checkinBin, opts.checkinArgs); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func (c *cluster) startProcess(name, bin, kubeconfig string, args []string) (*proc, error) {
	logFile, err := os.Create(filepath.Join(c.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd}
	go p.follow(c.ctx)
	return p, nil
}

func (c *cluster) startCheckin(port int, bin string, args []string) error {
	cfg, err := c.env.CheckinConfig(c.ctx)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(c.work, "checkin.kubeconfig")
	if err := testenv.WriteTokenKubeconfig(kubeconfig, cfg, testenv.CheckinServiceAccount); err != nil {
		return err
	}
	tlsDir := filepath.Join(c.work, "checkin-tls")
	secret := types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: "itmanager-checkin-tls"}
	if err := testenv.MountSecret(c.ctx, c.admin, secret, tlsDir, time.Minute, 30*time.Second); err != nil {
		return err
	}
	probes, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	probe := fmt.Sprintf("127.0.0.1:%d", probes[0])
	all := append([]string{
		fmt.Sprintf("--checkin-bind-address=127.0.0.1:%d", port), "--health-probe-bind-address=" + probe, "--metrics-bind-address=0",
		"--tls-cert-file=" + filepath.Join(tlsDir, "tls.crt"), "--tls-key-file=" + filepath.Join(tlsDir, "tls.key"),
	}, args...)
	if c.checkin, err = c.startProcess("checkin", bin, kubeconfig, all); err != nil {
		return err
	}
	return waitHTTP(c.ctx, "http://"+probe+"/readyz", time.Minute)
}

// stop stops everything and keeps the logs in $TMPDIR/itm-bench-last-logs.
func (c *cluster) stop() {
	for _, p := range append([]*proc{c.checkin}, c.managers...) {
		if p != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Wait()
		}
	}
	if c.env != nil {
		_ = c.env.Stop()
	}
	c.cancel()
	if c.work != "" {
		last := filepath.Join(os.TempDir(), "itm-bench-last-logs")
		_ = os.RemoveAll(last)
		_ = os.Rename(c.logDir, last)
		_ = os.RemoveAll(c.work)
	}
}

// scrape sums the metrics of every manager replica (only the leader's
// controllers run, so the sum is the leader's figures).
func (c *cluster) scrape() metrics {
	var all metrics
	for _, u := range c.metrics {
		m, err := scrapeURL(c.ctx, u)
		if err == nil {
			all = append(all, m...)
		}
	}
	return all
}

// apiMetrics are the API server's own metrics.
func (c *cluster) apiMetrics() metrics {
	raw, err := c.cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(c.ctx)
	if err != nil {
		return nil
	}
	return parseMetrics(raw)
}

// managerPeak is the highest peak RSS of the replicas.
func (c *cluster) managerPeak() int64 {
	var p int64
	for _, m := range c.managers {
		p = max(p, m.Peak())
	}
	return p
}

func (c *cluster) managerCPU() time.Duration {
	var t time.Duration
	for _, m := range c.managers {
		t += m.CPU()
	}
	return t
}

// reconcileErrors reads the manager logs and counts "Reconciler error"
// lines by controller and error, names and numbers blanked.
func (c *cluster) reconcileErrors() map[string]int {
	out := map[string]int{}
	for i := range c.managers {
		f, err := os.Open(filepath.Join(c.logDir, fmt.Sprintf("manager-%d.log", i)))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.Contains(line, []byte(`"Reconciler error"`)) {
				continue
			}
			var e struct {
				Controller string `json:"controller"`
				Error      string `json:"error"`
			}
			_ = json.Unmarshal(line, &e)
			out[e.Controller+": "+blank(e.Error)]++
		}
		f.Close()
	}
	return out
}

var (
	quoted = regexp.MustCompile(`"[^"]*"`)
	digits = regexp.MustCompile(`[0-9]+`)
)

func blank(s string) string {
	s = quoted.ReplaceAllString(s, `"…"`)
	s = digits.ReplaceAllString(s, "N")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// enrolAgents creates n laptop Devices agent-00000… with an agent, the
// labels and an OS target version, and waits until every one is enrolled.
func (c *cluster) enrolAgents(n int, labels map[string]string, target string, timeout time.Duration) ([]string, map[string]string, string, []byte, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("agent-%05d", i)
	}
	if err := parallel(32, n, func(i int) error {
		return c.admin.Create(c.ctx, &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: labels},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: target}},
		})
	}); err != nil {
		return nil, nil, "", nil, err
	}
	tokens, base, ca, err := waitEnrolled(c.ctx, c.admin, n, timeout)
	return names, tokens, base, ca, err
}

// waitEnrolled waits until every device's Secret exists and its Lease holds
// the hash of its token, and returns the tokens, the check-in base URL and
// the CA.
func waitEnrolled(ctx context.Context, admin client.Client, n int, timeout time.Duration) (map[string]string, string, []byte, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		secrets := &corev1.SecretList{}
		leases := &coordinationv1.LeaseList{}
		if err := admin.List(ctx, secrets, client.InNamespace(testenv.DevicesNamespace)); err != nil {
			logf("  list failed, retrying: %v", err)
			time.Sleep(5 * time.Second)
			continue
		}
		if err := admin.List(ctx, leases, client.InNamespace(testenv.DevicesNamespace)); err != nil {
			logf("  list failed, retrying: %v", err)
			time.Sleep(5 * time.Second)
			continue
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
		if len(tokens) >= n {
			base := endpoint[:strings.Index(endpoint, checkin.PathPrefix)]
			return tokens, base, ca, nil
		}
		logf("  enrolled %d/%d", len(tokens), n)
		time.Sleep(5 * time.Second)
	}
	return nil, "", nil, fmt.Errorf("enrolment did not finish within %s", timeout)
}

// --- the audit log --------------------------------------------------------

// Who wrote, as the audit log names them.
const (
	whoOperator  = "operator"
	whoCheckin   = "checkin"
	whoAPIServer = "kube-apiserver"
	whoBench     = "benchmark"
)

func whoIs(username string) string {
	switch {
	case strings.HasSuffix(username, ":"+testenv.ManagerServiceAccount):
		return whoOperator
	case strings.HasSuffix(username, ":"+testenv.CheckinServiceAccount):
		return whoCheckin
	case username == "system:apiserver":
		return whoAPIServer
	default:
		return whoBench
	}
}

// writes counts write requests by who|resource (subresource as
// resource/sub), from the audit log.
type writes map[string]float64

func (w writes) sub(o writes) writes {
	out := writes{}
	for k, v := range w {
		if d := v - o[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// of is who's writes by resource.
func (w writes) of(who string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range w {
		if wh, r, _ := strings.Cut(k, "|"); wh == who {
			out[r] += v
		}
	}
	return out
}

func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// list formats resource counts, largest first, each divided by per.
func list(m map[string]float64, per float64, skip ...string) string {
	type kv struct {
		k string
		v float64
	}
	var kvs []kv
	for k, v := range m {
		if v != 0 && !slices.Contains(skip, k) {
			kvs = append(kvs, kv{k, v})
		}
	}
	slices.SortFunc(kvs, func(a, b kv) int {
		if a.v != b.v {
			if a.v > b.v {
				return -1
			}
			return 1
		}
		return strings.Compare(a.k, b.k)
	})
	if len(kvs) == 0 {
		return "none"
	}
	var parts []string
	for _, e := range kvs {
		parts = append(parts, e.k+" "+num(e.v/per))
	}
	return strings.Join(parts, ", ")
}

// num formats v with at most one decimal, none when it is whole.
func num(v float64) string {
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10)
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.2f", v), "0")
}

type auditLog struct {
	path   string
	mu     sync.Mutex
	counts writes
	failed writes // answered ≥ 400
	read   atomic.Int64
}

func tailAudit(ctx context.Context, path string) *auditLog {
	a := &auditLog{path: path, counts: writes{}, failed: writes{}}
	go a.run(ctx)
	return a
}

func (a *auditLog) run(ctx context.Context) {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(a.path); err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var partial []byte
	for {
		line, err := r.ReadBytes('\n')
		a.read.Add(int64(len(line)))
		if err != nil {
			partial = append(partial, line...)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if len(partial) > 0 {
			line = append(partial, line...)
			partial = nil
		}
		var ev struct {
			Verb string `json:"verb"`
			User struct {
				Username string `json:"username"`
			} `json:"user"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
			ResponseStatus *struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.ObjectRef == nil {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		key := whoIs(ev.User.Username) + "|" + res
		a.mu.Lock()
		a.counts[key]++
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code >= 400 {
			a.failed[key]++
		}
		a.mu.Unlock()
	}
}

// snapshot returns the counts once the tail has read the whole file
// (bounded: the API server flushes its audit log within milliseconds).
func (a *auditLog) snapshot() (writes, writes) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := os.Stat(a.path)
		if err == nil && a.read.Load() >= st.Size() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps(a.counts), maps(a.failed)
}

func maps(w writes) writes {
	out := writes{}
	for k, v := range w {
		out[k] = v
	}
	return out
}

// follow watches list's kind (narrowed by opts) and calls fn with every
// event in order until ctx ends; it returns once the first watch is open.
// The API server ends a watch whose reader falls behind
// (apiserver_terminated_watchers_total), and any watch after 30 to 60
// minutes: follow then opens it again from the last resourceVersion it
// saw, so no event is lost. When that version is too old (410), it lists
// instead, and replays the list as Added events and what vanished since as
// Deleted ones. A reader that stopped at the first close saw nothing after
// it: every later change looked as if it never landed.
func (c *cluster) follow(ctx context.Context, list client.ObjectList, opts []client.ListOption, fn func(watch.Event)) error {
	open := func(rv string) (watch.Interface, error) {
		o := append(slices.Clone(opts), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
		return c.admin.Watch(ctx, list.DeepCopyObject().(client.ObjectList), o...)
	}
	gone := func(err error) bool { return apierrors.IsResourceExpired(err) || apierrors.IsGone(err) }
	last := map[types.NamespacedName]runtime.Object{} // what fn was last told exists
	deliver := func(ev watch.Event) {
		if m, err := meta.Accessor(ev.Object); err == nil {
			k := types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}
			if ev.Type == watch.Deleted {
				delete(last, k)
			} else {
				last[k] = ev.Object
			}
		}
		fn(ev)
	}
	// relist replays the current state and returns the version to watch from.
	relist := func() (string, error) {
		l := list.DeepCopyObject().(client.ObjectList)
		if err := c.admin.List(ctx, l, opts...); err != nil {
			return "", err
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return "", err
		}
		present := map[types.NamespacedName]bool{}
		for _, o := range items {
			if m, err := meta.Accessor(o); err == nil {
				present[types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}] = true
			}
			deliver(watch.Event{Type: watch.Added, Object: o})
		}
		for k, o := range last {
			if !present[k] {
				deliver(watch.Event{Type: watch.Deleted, Object: o})
			}
		}
		return l.GetResourceVersion(), nil
	}
	w, err := open("")
	if err != nil {
		return err
	}
	go func() {
		rv := ""
		for {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					if gone(apierrors.FromObject(ev.Object)) {
						rv = ""
					}
					continue
				}
				if m, err := meta.Accessor(ev.Object); err == nil && m.GetResourceVersion() != "" {
					rv = m.GetResourceVersion()
				}
				if ev.Type != watch.Bookmark {
					deliver(ev)
				}
			}
			w.Stop()
			for {
				time.Sleep(200 * time.Millisecond)
				if ctx.Err() != nil {
					return
				}
				if rv == "" {
					if rv, err = relist(); err != nil {
						logf("  listing %T again failed, retrying: %v", list, err)
						continue
					}
				}
				if w, err = open(rv); err == nil {
					break
				}
				if gone(err) {
					rv = ""
				}
			}
			c.watchRestarts.Add(1)
			logf("  the %T watch ended; opened it again from resourceVersion %q", list, rv)
		}
	}()
	return nil
}
