package tools

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// The files the chart ships and the page that documents the metrics; the
// controllers' integration suite proves that page lists exactly what the
// manager exports.
const (
	root       = "../../.."
	rulesFile  = root + "/charts/itmanager/files/prometheus-rules.yaml"
	rulesTests = "testdata/rules_test.yaml"
	dashboard  = root + "/charts/itmanager/files/dashboard.json"
	metricsDoc = root + "/docs/metrics.md"
)

// promql is Prometheus's parser with its default options, as a server
// without feature flags parses.
var promql = parser.NewParser(parser.Options{})

// documented are the metrics docs/metrics.md lists in its tables, by type.
func documented(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(itmanager_[a-z0-9_]+)` \\| (gauge|counter|histogram) \\|")
	out := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = m[2]
	}
	if len(out) < 10 {
		t.Fatalf("%s lists %d metrics; the table rows are | `name` | type | ...", metricsDoc, len(out))
	}
	return out
}

// metricNames are the metric names expr selects, a histogram's series
// (_bucket, _sum, _count) as the histogram's name.
func metricNames(expr string, types map[string]string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" {
				name = m.Value
			}
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && types[base] == "histogram" {
				name = base
			}
		}
		names = append(names, name)
		return nil
	})
	return names, nil
}

// undocumented are the problems of exprs (by where they are): a query that
// does not parse, or names a metric docs/metrics.md does not list.
func undocumented(exprs map[string]string, types map[string]string) []string {
	var problems []string
	for where, expr := range exprs {
		names, err := metricNames(expr, types)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if len(names) == 0 {
			problems = append(problems, where+": selects no metric")
		}
		for _, n := range names {
			if _, ok := types[n]; !ok {
				problems = append(problems, fmt.Sprintf("%s: %s is not a metric docs/metrics.md lists", where, n))
			}
		}
	}
	slices.Sort(problems)
	return problems
}

func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string
			}
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			out[fmt.Sprintf("panel %q query %s", p.Title, q.RefID)] = q.Expr
		}
	}
	return out
}

func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s: %v", rulesFile, errs)
	}
	out := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

func TestDashboardQueriesParseAndNameOnlyDocumentedMetrics(t *testing.T) {
	queries := dashboardQueries(t)
	if len(queries) < 15 {
		t.Fatalf("the dashboard has %d queries", len(queries))
	}
	for _, p := range undocumented(queries, documented(t)) {
		t.Error(p)
	}
}

func TestAlertRulesParseAndNameOnlyDocumentedMetrics(t *testing.T) {
	exprs := ruleExprs(t)
	want := []string{"ItmanagerCheckInsStopped", "ItmanagerStaleDevicesHigh", "ItmanagerPolicyAllowsNoDevice", "ItmanagerProvisioningErrors",
		"ItmanagerOffboardingBlocked", "ItmanagerRolloutHalted", "ItmanagerCertificateExpiresSoon"}
	for _, a := range want {
		if _, ok := exprs["alert "+a]; !ok {
			t.Errorf("no alert %s in %s", a, rulesFile)
		}
	}
	for _, p := range undocumented(exprs, documented(t)) {
		t.Error(p)
	}
}

// The check itself: a misspelt metric, a histogram series of a gauge and a
// query that does not parse are each caught; a histogram's _bucket is its
// histogram.
func TestUndocumentedCatchesUnknownNamesAndBadQueries(t *testing.T) {
	types := map[string]string{"itmanager_devices": "gauge", "itmanager_access_propagation_seconds": "histogram"}
	got := undocumented(map[string]string{
		"ok":        `sum by (class) (itmanager_devices) + histogram_quantile(0.9, rate(itmanager_access_propagation_seconds_bucket[5m]))`,
		"misspelt":  `itmanager_device`,
		"by name":   `{__name__="itmanager_devices_total"}`,
		"not hist":  `itmanager_devices_bucket`,
		"bad query": `sum(itmanager_devices`,
		"constant":  `vector(1)`,
	}, types)
	want := []string{"bad query: ", "by name: itmanager_devices_total is not", "constant: selects no metric", "misspelt: itmanager_device is not", "not hist: itmanager_devices_bucket is not"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %d problems", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d: got %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		t.Fatal("PROMTOOL is not set: run make test, or make promtool and PROMTOOL=$PWD/bin/promtool-<version> go test ./... here")
	}
	if !filepath.IsAbs(p) {
		t.Fatalf("PROMTOOL=%s: give an absolute path", p)
	}
	return p
}

func TestPromtoolChecksTheRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestPromtoolUnitTestsOfEveryAlertPass(t *testing.T) {
	tests, err := os.ReadFile(rulesTests)
	if err != nil {
		t.Fatal(err)
	}
	// Every alert is tested both firing and not firing.
	for name := range ruleExprs(t) {
		alert := strings.TrimPrefix(name, "alert ")
		if n := strings.Count(string(tests), "alertname: "+alert+"\n"); n < 2 {
			t.Errorf("%s: %d evaluations of %s; want it firing and not firing", rulesTests, n, alert)
		}
	}
	out, err := exec.Command(promtool(t), "test", "rules", rulesTests).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
