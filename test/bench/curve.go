package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// curvePoint is convergence and churn at one scale, each in a fresh cluster.
type curvePoint struct {
	devices            int
	operator, baseline time.Duration
	p50, p99           time.Duration
	timeouts           int
	churnRate          float64
	ceiling, needed    float64
	rss                int64
	rep                *report
}

// The last results runAccessCluster measured, for the curve.
var lastConv *convResult
var lastChurn *churnResult
var lastRSS int64

func runCurvePoint(ctx context.Context, n int) (curvePoint, error) {
	rep := &report{}
	lastConv, lastChurn = nil, nil
	if err := runAccessCluster(ctx, rep, map[string]bool{"convergence": true, "churn": true}, n); err != nil {
		return curvePoint{}, err
	}
	p := curvePoint{devices: n, rss: lastRSS, rep: rep}
	if lastConv != nil {
		p.operator, p.baseline = lastConv.operator, lastConv.baseline
	}
	if lastChurn != nil {
		p.p50, p.p99, p.timeouts, p.churnRate = pct(lastChurn.lat, 50), pct(lastChurn.lat, 99), lastChurn.timeouts, lastChurn.achieved
		p.ceiling, p.needed = lastChurn.ceiling, lastChurn.needed
	}
	return p, nil
}

func renderCurve(st stamp, curve []curvePoint) string {
	var b strings.Builder
	b.WriteString(curveBegin + "\n")
	b.WriteString("## Scale curve (make bench-100k)\n\n")
	fmt.Fprintf(&b, "Its own run: commit `%s`, %s, %s, command `%s` (took %s). Each row is a fresh cluster: %d policies over %d namespaces, 10 devices per person, scattered /32s.\n\n",
		st.commit, st.date, st.machine, st.command, st.took.Round(time.Second), *policies, 2**policies)
	b.WriteString("| devices | convergence | bare minimum | ratio (≤ 1.5×) | propagation p50 / p99 under churn | churn achieved | NetworkPolicy updates/s the p99 target needs / the API server's ceiling | manager peak RSS | RSS target | p99 target |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range curve {
		rssT, p99T, lim, rl := "< 300 MiB", "< 1 s", time.Second, int64(300<<20)
		if p.devices > 10000 {
			rssT, p99T, lim, rl = "< 1.5 GiB", "< 5 s", 5*time.Second, 1536<<20
		}
		ratio := p.operator.Seconds() / p.baseline.Seconds()
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f× (%s) | %s / %s (%d timed out) (%s) | %.1f/s | %.0f / %.0f | %s (%s) | %s | %s |\n",
			p.devices, ms(p.operator), ms(p.baseline), ratio, yes(ratio <= 1.5), ms(p.p50), ms(p.p99), p.timeouts,
			yes(p.timeouts == 0 && p.p99 < lim), p.churnRate, p.needed, p.ceiling, mib(p.rss), yes(p.rss < rl), rssT, p99T)
	}
	b.WriteString("\n")
	for _, p := range curve {
		fmt.Fprintf(&b, "<details><summary>%d devices: every figure</summary>\n\n| scenario | measure | value | target | met |\n|---|---|---|---|---|\n", p.devices)
		for _, r := range p.rep.rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.scenario, r.measure, r.value, dash(r.target), dash(r.met))
		}
		b.WriteString("\n" + strings.Join(p.rep.details, "\n") + "\n</details>\n\n")
	}
	b.WriteString(curveEnd + "\n")
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
