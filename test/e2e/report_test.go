//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
)

// figures are what the suite measured (figures, not assertions), for the
// report docs/e2e.md.
var figures struct {
	flips         []flip
	silent        string
	webhookOutage string
	leaderLoss    string
	nodeUpgrade   string
}

func (f *flip) String() string {
	v := "blocked"
	if f.admit {
		v = "admitted"
	}
	return fmt.Sprintf("%s %s (status %s, NetworkPolicy %s)", v, f.total.Round(time.Millisecond), f.status.Round(time.Millisecond), f.policy.Round(time.Millisecond))
}

func durationsOf(get func(flip) time.Duration) []time.Duration {
	var out []time.Duration
	for _, f := range figures.flips {
		out = append(out, get(f))
	}
	return out
}

// flipSummary is the packet verdict's p50/p99/max over the measured flips.
func flipSummary() string {
	ds := durationsOf(func(f flip) time.Duration { return f.total })
	return fmt.Sprintf("posture change at the agent → packet verdict flipped over %d flips: p50 %s, p99 %s, max %s",
		len(ds), percentile(ds, 0.5).Round(time.Millisecond), percentile(ds, 0.99).Round(time.Millisecond), percentile(ds, 1).Round(time.Millisecond))
}

func flipTable() string {
	if len(figures.flips) == 0 {
		return "not measured (the enforcement spec did not get there)\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Over %d flips (disk encryption alternated at one device's agent root; TCP connect probes in a tight loop, 200 ms timeout; a blocked verdict needs two blocked probes in a row):\n\n", len(figures.flips))
	b.WriteString("| from the fact written at the agent to | p50 | p99 | max |\n|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		get  func(flip) time.Duration
	}{
		{"the Device's status showing it (the agent's next check-in)", func(f flip) time.Duration { return f.status }},
		{"the NetworkPolicy changed (the manager)", func(f flip) time.Duration { return f.policy }},
		{"**the packet verdict flipped**", func(f flip) time.Duration { return f.total }},
		{"(of which: status → NetworkPolicy, the manager)", func(f flip) time.Duration { return f.policy - f.status }},
		{"(of which: NetworkPolicy → verdict, kube-router and the probe)", func(f flip) time.Duration { return f.total - f.policy }},
	} {
		ds := durationsOf(row.get)
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", row.name, percentile(ds, 0.5).Round(time.Millisecond),
			percentile(ds, 0.99).Round(time.Millisecond), percentile(ds, 1).Round(time.Millisecond))
	}
	b.WriteString("\nEach flip: ")
	for i := range figures.flips {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(figures.flips[i].String())
	}
	b.WriteString(".\n")
	return b.String()
}

var _ = ReportAfterSuite("the e2e report", func(r Report) {
	path := os.Getenv("E2E_REPORT")
	if path == "" {
		if repoRoot == "" {
			return
		}
		path = filepath.Join(repoRoot, "docs", "e2e.md")
	}
	ran := 0
	for _, s := range r.SpecReports {
		if s.LeafNodeType == types.NodeTypeIt && s.State != types.SpecStateSkipped && s.State != types.SpecStatePending {
			ran++
		}
	}
	if ran == 0 {
		// No cluster, or a filter that left nothing: keep the last report.
		return
	}
	var b strings.Builder
	b.WriteString("# End-to-end report (make e2e)\n\n")
	b.WriteString("Written by the suite `test/e2e` (`make e2e`) on the cluster of `make cluster`: the chart installed from the checkout with the local image, real Pods and kubelet, real upgrade Jobs and drains, NetworkPolicies enforced by kube-router, devices that are network namespaces on the node's bridge running the real `itmanager-agent`. Figures are measured, never asserted.\n\n")
	fmt.Fprintf(&b, "Run: %s, %s, commit %s, image %s.\n\n", r.StartTime.UTC().Format(time.RFC3339), r.RunTime.Round(time.Second), gitCommit(), os.Getenv("IMG"))
	b.WriteString("## Specs\n\n| spec | result | time |\n|---|---|---|\n")
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt {
			continue
		}
		state := s.State.String()
		if s.Failed() {
			state = "**" + state + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", strings.Join(append(s.ContainerHierarchyTexts[1:], s.LeafNodeText), " / "), state, s.RunTime.Round(time.Second))
	}
	b.WriteString("\n## Packet verdict after a posture change (DESIGN §6: p99 < 3 s)\n\n")
	b.WriteString(flipTable())
	b.WriteString(`
What governs the figure: the agent re-reads its facts every ` + "`--fact-poll`" + `
(1s) and checks in as soon as one changed, no sooner than the service's
minimum interval after its last check-in (` + "`checkin.minInterval`" + `: 1s in the e2e
values); the periodic interval (` + "`checkin.interval`" + `: 5s here, 1m by default)
no longer bounds it. So the first row is the poll plus what is left of the
minimum interval, and the manager (status → NetworkPolicy) and kube-router
(NetworkPolicy → packets) add the small rest. With the chart's default
` + "`checkin.minInterval`" + ` of 10s, a change right after a check-in waits up to
10s: DESIGN §6's 3s then holds for changes more than about 8s after a
check-in; set ` + "`checkin.minInterval`" + ` to 2s or less to meet it at every moment
(at the cost of allowing each device a check-in every 2s).
`)
	b.WriteString("\n## Other figures\n\n")
	for _, f := range []struct{ name, v string }{
		{"Silent device", figures.silent},
		{"Node upgrade", figures.nodeUpgrade},
		{"Leader loss", figures.leaderLoss},
		{"Webhook during helm upgrade", figures.webhookOutage},
	} {
		if f.v == "" {
			f.v = "not measured"
		}
		fmt.Fprintf(&b, "- %s: %s\n", f.name, f.v)
	}
	b.WriteString(`
## Single node: the drain evicts the operator

A node upgrade drains the node, and on a single-node cluster itmanager's own
Pods (manager, check-in service) run there. Evicted, they could only come
back on a cordoned node, so nothing would finish the upgrade or uncordon it.
The chart labels those Pods ` + "`itmanager.io/drain: skip`" + `, and the drain leaves a
labelled Pod in place (as Cluster API's ` + "`cluster.x-k8s.io/drain: skip`" + `), so they
keep running through the upgrade of their own node; the spec checks they
were not evicted. A Pod that tolerates the cordon taint is also left in
place, as Karpenter leaves Pods that tolerate its disruption taint:
evicting one only sees it scheduled straight back.
`)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: write the report %s: %v\n", path, err)
	}
})

func gitCommit() string {
	c, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	cmd := exec.CommandContext(c, "git", "rev-parse", "--short", "HEAD")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
