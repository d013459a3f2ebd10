package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

const (
	rolloutInterval    = 10 * time.Second // an idle agent's check-in interval
	rolloutMinInterval = time.Second      // the check-in service's --checkin-min-interval
	minUpgrade         = 20 * time.Second
	maxUpgrade         = 40 * time.Second
)

// upgradeTime is agent i's upgrade duration, the same in the rollout and
// in the baseline.
func upgradeTime(i int) time.Duration {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	return minUpgrade + time.Duration(rng.Int64N(int64(maxUpgrade-minUpgrade)+1))
}

func runRollout(ctx context.Context, rep *report) error {
	n := *rolloutN
	logf("== cluster for rollout: %d agents, maxUnavailable %s", n, *maxUnavail)
	c, err := startCluster(ctx, clusterOptions{replicas: *replicas,
		checkinArgs: []string{"--agent-interval=" + rolloutInterval.String(), "--checkin-min-interval=" + rolloutMinInterval.String()}})
	if err != nil {
		return err
	}
	defer c.stop()
	names, tokens, base, ca, err := c.enrolAgents(n, map[string]string{"ring": "bench"}, "2.0", 20*time.Minute)
	if err != nil {
		return err
	}
	f := newAgents(names, tokens, base, ca)
	for i := range names {
		go f.agent(c.ctx, i)
	}
	logf("warm-up: every agent checks in")
	if err := waitCheckedInLabel(c, n, "ring", "bench"); err != nil {
		return err
	}
	mu := intstr.Parse(*maxUnavail)
	limit, _ := intstr.GetScaledValueFromIntOrPercent(&mu, n, false)
	limit = max(limit, 1)
	peak := watchPeak(c)
	open := time.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute)
	logf("window opens at %s", open.Format(time.RFC3339))
	if err := c.admin.Create(c.ctx, &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "bench"}},
			Windows:  []itmv1.Window{{Schedule: fmt.Sprintf("%d %d * * *", open.Minute(), open.Hour()), Duration: metav1.Duration{Duration: 4 * time.Hour}}},
			Rollout:  itmv1.Rollout{MaxUnavailable: &mu, MaxFailures: ptr.To(int32(n))},
		},
	}); err != nil {
		return err
	}
	time.Sleep(time.Until(open))
	// The baseline runs beside the rollout, from the same instant: the same
	// upgrade durations under the same limit, each slot handed to the next
	// device the moment it frees, plus the agent's own report delay. It is
	// the best any orchestrator could do; it costs no CPU worth counting.
	baseline := make(chan time.Duration, 1)
	go func() { baseline <- runBaseline(n, limit) }()
	cpu0 := c.managerCPU()
	if err := waitUpgraded(c, n, time.Hour); err != nil {
		return err
	}
	done := time.Since(open)
	cpu := c.managerCPU() - cpu0
	base0 := <-baseline
	p, over := peak()
	s := "rollout"
	rep.add(s, fmt.Sprintf("window open → all %d agents Succeeded (maxUnavailable %s = %d; upgrades %s–%s)", n, mu.String(), limit, minUpgrade, maxUpgrade), done.Round(time.Second).String(), "", "")
	rep.add(s, "measured baseline: the same upgrades under the same limit, each slot reused at once", base0.Round(time.Second).String(), "", "")
	rep.add(s, "rollout / baseline", fmt.Sprintf("%.2f×", done.Seconds()/base0.Seconds()), "", "")
	rep.add(s, "peak upgrades in flight, from a watch of every Device transition", fmt.Sprintf("%d (%d events over the limit)", p, over), fmt.Sprintf("≤ %d", limit), yes(p <= limit))
	rep.add(s, "manager CPU during the rollout", fmt.Sprintf("%s (%.0f%% of a core)", ms(cpu), 100*cpu.Seconds()/done.Seconds()), "", "")
	rep.add(s, "agent check-ins ok / failed", fmt.Sprintf("%d / %d", f.ok.Load(), f.failed.Load()), "", "")
	lifeRows(c, rep, "rollout", n)
	return nil
}

// runBaseline runs n upgrades of upgradeTime(i) with at most limit at once,
// each starting when a slot frees and after the agent's report delay.
func runBaseline(n, limit int) time.Duration {
	t0 := time.Now()
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(rolloutMinInterval + 100*time.Millisecond + upgradeTime(i))
			<-sem
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

// watchPeak follows every Device transition and returns a function giving
// the highest number in flight (Authorized or InProgress) at once and how
// many events saw more than the limit.
func watchPeak(c *cluster) func() (int, int) {
	var mu sync.Mutex
	flight := map[string]bool{}
	peak, over := 0, 0
	mu2 := intstr.Parse(*maxUnavail)
	limit, _ := intstr.GetScaledValueFromIntOrPercent(&mu2, *rolloutN, false)
	err := c.follow(c.ctx, &itmv1.DeviceList{}, []client.ListOption{client.MatchingLabels{"ring": "bench"}}, func(ev watch.Event) {
		d, ok := ev.Object.(*itmv1.Device)
		if !ok {
			return
		}
		in := ev.Type != watch.Deleted && d.Status.Upgrade != nil &&
			(d.Status.Upgrade.State == itmv1.UpgradeStateAuthorized || d.Status.Upgrade.State == itmv1.UpgradeStateInProgress)
		mu.Lock()
		if in {
			flight[d.Name] = true
		} else {
			delete(flight, d.Name)
		}
		peak = max(peak, len(flight))
		if len(flight) > max(limit, 1) {
			over++
		}
		mu.Unlock()
	})
	return func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			return -1, -1
		}
		return peak, over
	}
}

func waitCheckedInLabel(c *cluster, n int, k, v string) error {
	deadline := time.Now().Add(15 * time.Minute)
	for time.Now().Before(deadline) {
		list := &itmv1.DeviceList{}
		if err := c.admin.List(c.ctx, list, client.MatchingLabels{k: v}); err != nil {
			logf("  list failed, retrying: %v", err)
			time.Sleep(5 * time.Second)
			continue
		}
		ready := 0
		for _, d := range list.Items {
			for _, cond := range d.Status.Conditions {
				if cond.Type == itmv1.DeviceConditionCheckedIn && cond.Status == metav1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == n {
			return nil
		}
		logf("  checked in %d/%d", ready, n)
		time.Sleep(3 * time.Second)
	}
	return fmt.Errorf("devices did not all check in")
}

func waitUpgraded(c *cluster, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for time.Now().Before(deadline) {
		list := &itmv1.DeviceList{}
		if err := c.admin.List(c.ctx, list, client.MatchingLabels{"ring": "bench"}); err != nil {
			logf("  list failed, retrying: %v", err)
			time.Sleep(5 * time.Second)
			continue
		}
		ok := 0
		for _, d := range list.Items {
			if u := d.Status.Upgrade; u != nil && u.State == itmv1.UpgradeStateSucceeded {
				ok++
			}
		}
		if ok == n {
			return nil
		}
		if time.Since(last) > 30*time.Second {
			logf("  %d/%d succeeded", ok, n)
			last = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("rollout did not finish within %s", timeout)
}

// agents simulates itmanager-agent: it checks in every rolloutInterval
// when idle and at once when its upgrade changes state.
type agentFleet struct {
	names      []string
	tokens     map[string]string
	base       string
	client     *http.Client
	ok, failed atomic.Int64
}

func newAgents(names []string, tokens map[string]string, base string, ca []byte) *agentFleet {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &agentFleet{names: names, tokens: tokens, base: base, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConns: 256, MaxIdleConnsPerHost: 256,
	}}}
}

func (f *agentFleet) agent(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), 8))
	version := "1.0"
	var seq uint64
	var report *checkin.UpgradeReport
	var upgradeDone time.Time
	wait := time.Duration(rng.Int64N(int64(rolloutInterval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = rolloutInterval
		if !upgradeDone.IsZero() && !time.Now().Before(upgradeDone) {
			version = "2.0"
			report = &checkin.UpgradeReport{State: wire.UpgradeStateSucceeded, TargetVersion: "2.0", Message: "upgraded"}
			upgradeDone = time.Time{}
		}
		seq++
		res, ok := f.checkIn(ctx, i, checkin.Request{Sequence: seq, Facts: checkin.Facts{OSVersion: version, AgentVersion: "bench"}, Upgrade: report})
		if !ok {
			continue
		}
		report = nil
		if res.Upgrade == nil || !upgradeDone.IsZero() {
			continue
		}
		switch res.Upgrade.State {
		case wire.UpgradeStateAuthorized:
			report = &checkin.UpgradeReport{State: wire.UpgradeStateInProgress, TargetVersion: res.Upgrade.TargetVersion}
			wait = rolloutMinInterval + 100*time.Millisecond
		case wire.UpgradeStateInProgress:
			d := upgradeTime(i)
			upgradeDone = time.Now().Add(d)
			wait = d
		}
	}
}

func (f *agentFleet) checkIn(ctx context.Context, i int, r checkin.Request) (*checkin.Response, bool) {
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
