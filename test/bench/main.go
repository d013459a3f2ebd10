// Command bench is itmanager's one benchmark program (`make bench`): it
// runs the scenarios against the real control plane (etcd and
// kube-apiserver built from source, an audit log of every write), the real
// manager binary as two replicas with leader election, the real check-in
// service and a real slapd, measures everything from outside through the
// API, and writes one report, docs/benchmarks.md, with every figure next to
// its DESIGN §6 target.
//
//	go run ./test/bench                                  # everything, ~40 min
//	go run ./test/bench -scenarios convergence,churn -devices 1000
//	go run ./test/bench -scenarios convergence,churn -curve 1000,10000,100000   # make bench-100k
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

var (
	scenariosFlag = flag.String("scenarios", strings.Join(allScenarios, ","), "Comma-separated scenarios to run: "+strings.Join(allScenarios, ", ")+".")
	devices       = flag.Int("devices", 10000, "Devices of the AccessPolicy scenarios (convergence, churn, steady), 10 per person.")
	groups        = flag.Int("groups", 10, "Groups; person p is in group p mod groups.")
	policies      = flag.Int("policies", 100, "AccessPolicies; policy j grants group j mod groups access to namespaces 2j and 2j+1.")
	changes       = flag.Int("changes", 100, "Measured posture changes (half deny a device, half allow it again).")
	churnFor      = flag.Duration("churn-for", 6*time.Minute, "Stop measuring posture changes after this long (when each takes up to its 30 s bound).")
	churnRate     = flag.Float64("churn", 50, "Background device changes per second while the posture changes are measured.")
	steadyFor     = flag.Duration("steady", 10*time.Minute, "Length of the steady state (spans --account-provider-check-interval and a token renewal).")
	providerCheck = flag.Duration("provider-check", 2*time.Minute, "The manager's --account-provider-check-interval.")
	joiners       = flag.Int("people", 500, "People onboarded with both providers.")
	agents        = flag.Int("agents", 10000, "Agents of the check-in scenario.")
	agentInterval = flag.Duration("agent-interval", time.Minute, "Check-in interval of the check-in scenario.")
	checkinFor    = flag.Duration("checkin-steady", 5*time.Minute, "Length of the check-in measurement (≥ 5m shows the one-write-per-5-minutes target).")
	staleAfter    = flag.Duration("stale-after", 5*time.Minute, "--checkin-stale-after of the check-in scenario.")
	staleSample   = flag.Int("stale-sample", 100, "Agents stopped to measure the lag of CheckedIn=False.")
	rolloutN      = flag.Int("rollout", 2000, "Agent devices of the rollout scenario.")
	maxUnavail    = flag.String("max-unavailable", "10%", "The rollout window's maxUnavailable.")
	replicas      = flag.Int("replicas", 2, "Manager replicas (leader election on when more than one).")
	curveFlag     = flag.String("curve", "", "Comma-separated device counts: run convergence and churn at each in a fresh cluster and write the scale curve (make bench-100k).")
	out           = flag.String("out", "docs/benchmarks.md", "Report file (relative to the repository root).")
	pprofAddr     = flag.String("pprof", "", "Serve the first manager replica's Go profiling endpoints (net/http/pprof) here, e.g. 127.0.0.1:6060, to see where its time and memory go; off by default.")
	allowDirty    = flag.Bool("allow-dirty", false, "Run from a working tree with uncommitted changes; the report's commit is then marked -dirty.")
)

var allScenarios = []string{"onboarding", "convergence", "churn", "steady", "checkins", "rollout"}

// row is one line of the report's table.
type row struct {
	scenario, measure, value, target string
	met                              string // "yes", "no" or "" (no target)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// report collects the rows and the detail sections.
type report struct {
	rows    []row
	details []string
}

func (r *report) add(scenario, measure, value, target, met string) {
	r.rows = append(r.rows, row{scenario, measure, value, target, met})
	logf("  %s | %s | %s | %s | %s", scenario, measure, value, target, met)
}

func (r *report) detail(format string, args ...any) {
	r.details = append(r.details, fmt.Sprintf(format, args...))
}

func main() {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // envtest's own progress lines

	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	outPath := *out
	if !filepath.IsAbs(outPath) {
		outPath = filepath.Join(root, outPath)
	}
	st, err := stampNow(root, outPath)
	if err != nil {
		return err
	}
	selected := map[string]bool{}
	for _, s := range strings.Split(*scenariosFlag, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
		selected[s] = true
	}
	ctx := context.Background()
	rep := &report{}
	start := time.Now()
	var curve []curvePoint
	if *curveFlag != "" {
		for _, f := range strings.Split(*curveFlag, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return fmt.Errorf("-curve: %w", err)
			}
			p, err := runCurvePoint(ctx, n)
			if err != nil {
				return fmt.Errorf("curve at %d devices: %w", n, err)
			}
			curve = append(curve, p)
		}
	} else {
		// The report is written after each cluster, so that a run cut short
		// keeps what it measured (its header says how long it ran).
		save := func() {
			st.took = time.Since(start)
			_ = os.WriteFile(outPath, []byte(render(st, rep, nil, outPath)), 0o644)
		}
		if selected["onboarding"] || selected["convergence"] || selected["churn"] || selected["steady"] {
			if err := runAccessCluster(ctx, rep, selected, *devices); err != nil {
				return err
			}
			save()
		}
		if selected["checkins"] {
			if err := runCheckins(ctx, rep); err != nil {
				return err
			}
			save()
		}
		if selected["rollout"] {
			if err := runRollout(ctx, rep); err != nil {
				return err
			}
		}
	}
	st.took = time.Since(start)
	text := render(st, rep, curve, outPath)
	fmt.Print("\n" + text)
	return os.WriteFile(outPath, []byte(text), 0o644)
}

// stamp is what the report says about where and how it was measured.
type stamp struct {
	commit, date, machine, goVersion, controlPlane, command, scenarios string
	took                                                               time.Duration
}

func stampNow(root, outPath string) (stamp, error) {
	var s stamp
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		o, err := cmd.Output()
		return strings.TrimSpace(string(o)), err
	}
	commit, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return s, fmt.Errorf("git rev-parse: %w", err)
	}
	// Files changed or added, the report itself aside (it does not change
	// what is measured), and bin/ and .dev/ (tools and make dev's state).
	spec := []string{"status", "--porcelain", "--untracked-files=normal", "--", ".", ":!docs/benchmarks.md", ":!bin", ":!.dev"}
	if rel, err := filepath.Rel(root, outPath); err == nil && !strings.HasPrefix(rel, "..") {
		spec = append(spec, ":!"+rel)
	}
	dirty, err := git(spec...)
	if err != nil {
		return s, fmt.Errorf("git status: %w", err)
	}
	if dirty != "" {
		if !*allowDirty {
			return s, fmt.Errorf("the working tree has uncommitted changes; commit them (the report names a commit) or pass -allow-dirty (ALLOW_DIRTY=1) to mark it -dirty:\n%s", dirty)
		}
		commit += "-dirty"
	}
	s.commit = commit
	s.date = time.Now().UTC().Format("2006-01-02 15:04 MST")
	s.machine = machine()
	s.goVersion = runtime.Version()
	s.controlPlane = controlPlaneVersions()
	s.command = "go run ./test/bench " + strings.Join(os.Args[1:], " ")
	var ran, skipped []string
	for _, sc := range allScenarios {
		if strings.Contains(","+*scenariosFlag+",", ","+sc+",") {
			ran = append(ran, sc)
		} else {
			skipped = append(skipped, sc)
		}
	}
	s.scenarios = strings.Join(ran, ", ")
	if len(skipped) > 0 {
		s.scenarios += " (a subset: not run here: " + strings.Join(skipped, ", ") + ")"
	}
	return s, nil
}

func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	ram := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				ram = fmt.Sprintf(", %.1f GiB RAM", kb/(1<<20))
			}
		}
	}
	load := ""
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average at start " + strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return fmt.Sprintf("%s, %d cores%s%s", model, runtime.NumCPU(), ram, load)
}

func controlPlaneVersions() string {
	bin, err := testenv.BinaryDir()
	if err != nil {
		return "unknown"
	}
	var parts []string
	for _, b := range []string{"etcd", "kube-apiserver"} {
		o, err := exec.Command(filepath.Join(bin, b), "--version").CombinedOutput()
		if err != nil {
			parts = append(parts, b+" (version unknown)")
			continue
		}
		line := strings.Split(strings.TrimSpace(string(o)), "\n")[0]
		parts = append(parts, line)
	}
	return strings.Join(parts, ", ") + " (built from source)"
}

const (
	curveBegin = "<!-- scale curve: written by make bench-100k -->"
	curveEnd   = "<!-- end of scale curve -->"
)

func render(st stamp, rep *report, curve []curvePoint, outPath string) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (`go run ./test/bench`, one program: test/bench). Every figure is measured from outside, through the API and the audit log of the API server, against the real control plane, the real manager binary and check-in service and a real slapd; nothing here is computed from a model. Targets are DESIGN §6.\n\n")
	fmt.Fprintf(&b, "- Commit: `%s`\n- Date: %s (took %s)\n- Machine: %s\n- Go: %s\n- Control plane: %s\n- Command: `%s`\n- Scenarios: %s\n\n",
		st.commit, st.date, st.took.Round(time.Second), st.machine, st.goVersion, st.controlPlane, st.command, st.scenarios)
	if len(rep.rows) > 0 {
		b.WriteString("| scenario | measure | value | target | met |\n|---|---|---|---|---|\n")
		for _, r := range rep.rows {
			met := r.met
			if met == "" {
				met = "—"
			}
			target := r.target
			if target == "" {
				target = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.scenario, r.measure, r.value, target, met)
		}
		b.WriteString("\n")
		for _, d := range rep.details {
			b.WriteString(d)
			if !strings.HasSuffix(d, "\n") {
				b.WriteString("\n")
			}
			b.WriteString("\n")
		}
	}
	if len(curve) > 0 {
		curveText := renderCurve(st, curve)
		// A curve run keeps the rest of the report, which is the other run's.
		if old, err := os.ReadFile(outPath); err == nil && len(rep.rows) == 0 {
			if i := bytes.Index(old, []byte(curveBegin)); i >= 0 {
				if j := bytes.Index(old[i:], []byte(curveEnd)); j >= 0 {
					return string(old[:i]) + curveText + string(old[i+j+len(curveEnd):])
				}
			}
			return strings.TrimRight(string(old), "\n") + "\n\n" + curveText
		}
		b.WriteString(curveText)
	} else if old, err := os.ReadFile(outPath); err == nil {
		// Keep the last scale curve: it is its own run, with its own stamp.
		if i := bytes.Index(old, []byte(curveBegin)); i >= 0 {
			if j := bytes.Index(old[i:], []byte(curveEnd)); j >= 0 {
				b.Write(old[i : i+j+len(curveEnd)])
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}
