package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// The AccessPolicy world: n Devices, 10 per person, person p in group
// p mod groups, policy j granting group j mod groups two namespaces.
// Device i's address is 10.0.0.0 + 2i: no two addresses are adjacent, so
// nothing aggregates and each group's 1/groups of the devices are as many
// /32s (1,000 per NetworkPolicy at 10,000 devices).
func addrOf(i int) netip.Addr {
	j := 2 * i
	return netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)})
}

func devName(i int) string    { return fmt.Sprintf("dev-%06d", i) }
func personName(p int) string { return fmt.Sprintf("person-%05d", p) }
func nsName(k int) string     { return fmt.Sprintf("ns-%03d", k) }
func policyName(j int) string { return fmt.Sprintf("policy-%03d", j) }
func groupOf(i int) int       { return (i / 10) % *groups }

// runAccessCluster runs onboarding, convergence, churn and steady (those
// selected) in one cluster, in that order.
func runAccessCluster(ctx context.Context, rep *report, selected map[string]bool, n int) error {
	needPolicies := selected["convergence"] || selected["churn"] || selected["steady"]
	logf("== cluster for %v at %d devices", keys(selected, "onboarding", "convergence", "churn", "steady"), n)
	logf("starting slapd on loopback")
	dir, err := testenv.StartLDAP(testenv.LDAPOptions{})
	if err != nil {
		return err
	}
	defer func() { _ = dir.Stop() }()
	c, err := startCluster(ctx, clusterOptions{replicas: *replicas,
		managerArgs: []string{"--account-provider-check-interval=" + providerCheck.String()}})
	if err != nil {
		return err
	}
	defer c.stop()
	if err := createProviders(c, dir); err != nil {
		return err
	}
	switch {
	case selected["onboarding"]:
		if err := runOnboarding(c, rep, *joiners); err != nil {
			return err
		}
	case selected["steady"]:
		// The steady state must span a token renewal: a few people with
		// Kubernetes accounts (10-minute tokens, renewed after 8).
		if _, err := onboard(c, 20); err != nil {
			return err
		}
	}
	if needPolicies {
		if err := setupDevices(c, n); err != nil {
			return err
		}
		conv, err := convergence(c, n)
		if err != nil {
			return err
		}
		lastConv = conv
		if selected["convergence"] {
			conv.report(rep, n)
		}
	}
	if selected["churn"] {
		res, err := churn(c, n, *changes, *churnRate)
		if err != nil {
			return err
		}
		lastChurn = res
		res.report(rep, n)
	}
	if selected["steady"] {
		if err := steady(c, rep, *steadyFor); err != nil {
			return err
		}
	}
	lastRSS = c.managerPeak()
	lifeRows(c, rep, "access", n)
	return nil
}

func keys(m map[string]bool, order ...string) []string {
	var out []string
	for _, k := range order {
		if m[k] {
			out = append(out, k)
		}
	}
	return out
}

// lifeRows are the figures of a cluster's whole life: peak memory and the
// watches the API server closed.
func lifeRows(c *cluster, rep *report, scenario string, n int) {
	limit, target := int64(300<<20), "< 300 MiB at 10,000 devices"
	if n > 10000 {
		limit, target = 1536<<20, "< 1.5 GiB at 100,000 devices"
	}
	peak := c.managerPeak()
	met := yes(peak < limit)
	if n < 10000 {
		met, target = "", target+" (this run: "+fmt.Sprint(n)+")"
	}
	rep.add(scenario, fmt.Sprintf("manager peak RSS (highest replica, whole cluster life, %d devices)", n), mib(peak), target, met)
	rep.add(scenario, "check-in service peak RSS", mib(c.checkin.Peak()), "", "")
	// A closed watch costs its reader a re-watch (informers resume from
	// their resourceVersion; the benchmark's watches do too, see follow).
	v := "not read (the API server's metrics)"
	if m := c.apiMetrics(); m != nil {
		v = "none"
		if tw := m.by("apiserver_terminated_watchers_total", "resource"); len(tw) > 0 {
			v = list(tw, 1)
		}
		v += fmt.Sprintf("; the benchmark's own watches opened again after they ended, for any reason (server timeouts included): %d", c.watchRestarts.Load())
	}
	rep.add(scenario, "watches the API server closed because their reader fell behind (apiserver_terminated_watchers_total, whole cluster life, by resource)", v, "", "")
}

// setupDevices creates the namespaces, the people (Active at once: no
// account provider asked for) and the devices, each reporting an encrypted
// disk (as its check-in would) so that every policy allows it.
func setupDevices(c *cluster, n int) error {
	people := (n + 9) / 10
	logf("creating %d namespaces, %d people in %d groups, %d Devices with encrypted disks", 2**policies, people, *groups, n)
	t0 := time.Now()
	if err := parallel(32, 2**policies, func(k int) error {
		return ignoreExists(c.admin.Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(k)}}))
	}); err != nil {
		return err
	}
	if err := parallel(32, people, func(p int) error {
		return ignoreExists(c.admin.Create(c.ctx, &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: personName(p)},
			Spec: itmv1.OnboardingRequestSpec{
				Person:           itmv1.Person{DisplayName: "Person", Email: fmt.Sprintf("p%d@example.com", p)},
				Groups:           []string{fmt.Sprintf("group-%02d", p%*groups)},
				AccountProviders: []string{},
				ApprovalRequired: ptr.To(false),
			},
		}))
	}); err != nil {
		return err
	}
	if err := waitPhase(c, func(r *itmv1.OnboardingRequest) bool { return r.Status.Phase == itmv1.OnboardingPhaseActive },
		client.HasLabels{}, people, 30*time.Minute, "person-"); err != nil {
		return err
	}
	var done atomic.Int64
	if err := parallel(32, n, func(i int) error {
		d := &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: devName(i), Labels: map[string]string{"bench": "access"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Assignee: personName(i / 10),
				Addresses: []string{addrOf(i).String()}},
		}
		if err := ignoreExists(c.admin.Create(c.ctx, d)); err != nil {
			return err
		}
		if k := done.Add(1); k%5000 == 0 {
			logf("  %d devices", k)
		}
		return setEncrypted(c, devName(i), true)
	}); err != nil {
		return err
	}
	logf("set up in %s", time.Since(t0).Round(time.Second))
	return nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// setEncrypted reports the device's disk encryption, as its check-in
// would, retrying when the Device controller's status write got there first.
func setEncrypted(c *cluster, name string, encrypted bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &itmv1.Device{}
		if err := c.admin.Get(c.ctx, client.ObjectKey{Name: name}, d); err != nil {
			return err
		}
		if d.Status.Observed == nil {
			d.Status.Observed = &itmv1.ObservedFacts{}
		}
		d.Status.Observed.DiskEncrypted = ptr.To(encrypted)
		return c.admin.Status().Update(c.ctx, d)
	})
}

func waitPhase(c *cluster, done func(*itmv1.OnboardingRequest) bool, _ client.HasLabels, n int, timeout time.Duration, prefix string) error {
	deadline := time.Now().Add(timeout)
	for {
		var l itmv1.OnboardingRequestList
		if err := c.admin.List(c.ctx, &l); err != nil {
			logf("  list failed, retrying: %v", err)
			time.Sleep(5 * time.Second)
			continue
		}
		k := 0
		for i := range l.Items {
			if len(l.Items[i].Name) >= len(prefix) && l.Items[i].Name[:len(prefix)] == prefix && done(&l.Items[i]) {
				k++
			}
		}
		if k >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d %s… requests done within %s", k, n, prefix, timeout)
		}
		time.Sleep(time.Second)
	}
}

// --- NetworkPolicies seen from a watch ------------------------------------

type npWatcher struct {
	mu   sync.Mutex
	cond *sync.Cond
	// byNS holds each namespace's managed NetworkPolicies' prefixes.
	byNS map[string]map[string][]netip.Prefix
	seen time.Time
}

func watchNPs(ctx context.Context, c *cluster) (*npWatcher, error) {
	nw := &npWatcher{byNS: map[string]map[string][]netip.Prefix{}}
	nw.cond = sync.NewCond(&nw.mu)
	err := c.follow(ctx, &networkingv1.NetworkPolicyList{}, []client.ListOption{client.MatchingLabels{itmv1.LabelManagedBy: itmv1.ManagedByValue}}, func(ev watch.Event) {
		np, ok := ev.Object.(*networkingv1.NetworkPolicy)
		if !ok {
			return
		}
		var ps []netip.Prefix
		for _, r := range np.Spec.Ingress {
			for _, f := range r.From {
				if f.IPBlock == nil {
					continue
				}
				if p, err := netip.ParsePrefix(f.IPBlock.CIDR); err == nil {
					ps = append(ps, p)
				}
			}
		}
		nw.mu.Lock()
		if nw.byNS[np.Namespace] == nil {
			nw.byNS[np.Namespace] = map[string][]netip.Prefix{}
		}
		if ev.Type == watch.Deleted {
			delete(nw.byNS[np.Namespace], np.Name)
		} else {
			nw.byNS[np.Namespace][np.Name] = ps
		}
		nw.seen = time.Now()
		nw.cond.Broadcast()
		nw.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	return nw, nil
}

// quiet waits until no managed NetworkPolicy has changed for d, or for at
// most limit.
func (nw *npWatcher) quiet(d, limit time.Duration) {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		nw.mu.Lock()
		since := time.Since(nw.seen)
		nw.mu.Unlock()
		if since >= d {
			return
		}
	}
}

// addresses counts the addresses namespace ns's NetworkPolicies allow.
func (nw *npWatcher) addresses(ns string) int {
	t := 0
	for _, ps := range nw.byNS[ns] {
		for _, p := range ps {
			t += 1 << (32 - p.Bits())
		}
	}
	return t
}

func (nw *npWatcher) allows(ns string, a netip.Addr) bool {
	for _, ps := range nw.byNS[ns] {
		if slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return true
		}
	}
	return false
}

// waitFor waits until every namespace in nss allows a (or no longer does)
// and returns when the event that made it so arrived.
func (nw *npWatcher) waitFor(nss []string, a netip.Addr, allowed bool, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { nw.mu.Lock(); nw.cond.Broadcast(); nw.mu.Unlock() })
	defer t.Stop()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for {
		ok := true
		for _, ns := range nss {
			if nw.allows(ns, a) != allowed {
				ok = false
				break
			}
		}
		if ok {
			return nw.seen, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		nw.cond.Wait()
	}
}

// affected are the namespaces whose NetworkPolicies device i's group gets.
func affected(i int) []string {
	var out []string
	for j := groupOf(i); j < *policies; j += *groups {
		out = append(out, nsName(2*j), nsName(2*j+1))
	}
	return out
}

// --- convergence ------------------------------------------------------------

type convResult struct {
	operator, baseline   time.Duration
	nps                  int
	cidrs                int
	reconciles           map[string]float64
	apErrors             float64
	apReconcileSeconds   float64
	apQueueWait, apWaits float64
	apWorkers            int
	opWrites             map[string]float64
	opFailed             map[string]float64
	bodyBytes            map[string]float64
	cpu                  time.Duration
}

// convergence creates the policies and measures until every NetworkPolicy
// allows every device of its group and every policy's status says so;
// then a plain client creates copies of the same NetworkPolicies in fresh
// namespaces, the bare minimum of writes, in the same cluster.
func convergence(c *cluster, n int) (*convResult, error) {
	ctx, stop := context.WithCancel(c.ctx)
	defer stop()
	nw, err := watchNPs(ctx, c)
	if err != nil {
		return nil, err
	}
	perGroup := 0
	for i := range n {
		if groupOf(i) == 0 {
			perGroup++
		}
	}
	time.Sleep(2 * time.Second) // the Device controller's last status writes of the setup
	m0, a0, w0, cpu0 := c.scrape(), c.apiMetrics(), first(c.audit.snapshot()), c.managerCPU()
	_, f0 := c.audit.snapshot()
	logf("creating %d AccessPolicies (each: one group, two namespaces, disk encryption required)", *policies)
	t0 := time.Now()
	if err := parallel(16, *policies, func(j int) error {
		return c.admin.Create(c.ctx, &itmv1.AccessPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: policyName(j)},
			Spec: itmv1.AccessPolicySpec{
				Subjects:     itmv1.Subjects{Groups: []string{fmt.Sprintf("group-%02d", j%*groups)}},
				Posture:      &itmv1.Posture{RequireDiskEncryption: true},
				Destinations: []itmv1.Destination{{Namespaces: []string{nsName(2 * j), nsName(2*j + 1)}, Ports: []itmv1.Port{{Port: 443}}}},
			},
		})
	}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Hour)
	var npDone, statusDone time.Time
	for npDone.IsZero() || statusDone.IsZero() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("policies not enforced within an hour")
		}
		if npDone.IsZero() {
			nw.mu.Lock()
			ok := true
			for j := range *policies {
				g := j % *groups
				want := 0
				if g < *groups {
					want = perGroupOf(n, g)
				}
				if nw.addresses(nsName(2*j)) != want || nw.addresses(nsName(2*j+1)) != want {
					ok = false
					break
				}
			}
			if ok {
				npDone = nw.seen
			}
			nw.mu.Unlock()
		}
		if statusDone.IsZero() {
			var l itmv1.AccessPolicyList
			if err := c.admin.List(c.ctx, &l); err != nil {
				return nil, err
			}
			ok := len(l.Items) == *policies
			for _, p := range l.Items {
				var j int
				if _, err := fmt.Sscanf(p.Name, "policy-%d", &j); err != nil {
					return nil, fmt.Errorf("unexpected AccessPolicy %s: %w", p.Name, err)
				}
				if p.Status.ObservedGeneration != p.Generation || int(p.Status.Devices.Allowed) != perGroupOf(n, j%*groups) {
					ok = false
					break
				}
			}
			if ok {
				statusDone = time.Now()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := &convResult{operator: max(npDone.Sub(t0), statusDone.Sub(t0))}
	logf("operator: all %d policies enforced %s after the first create (NetworkPolicies %s, status %s)", *policies,
		ms(res.operator), ms(npDone.Sub(t0)), ms(statusDone.Sub(t0)))
	time.Sleep(3 * time.Second) // writes after the last one that mattered would show here
	m1, a1, cpu1 := c.scrape(), c.apiMetrics(), c.managerCPU()
	w1, f1 := c.audit.snapshot()
	res.cpu = cpu1 - cpu0
	res.reconciles = map[string]float64{}
	for k, v := range m1.by("controller_runtime_reconcile_total", "controller") {
		if d := v - m0.by("controller_runtime_reconcile_total", "controller")[k]; d > 0 {
			res.reconciles[k] = d
		}
	}
	ap := map[string]string{"controller": "accesspolicy"}
	res.apErrors = m1.sum("controller_runtime_reconcile_errors_total", ap) - m0.sum("controller_runtime_reconcile_errors_total", ap)
	res.apReconcileSeconds = m1.sum("controller_runtime_reconcile_time_seconds_sum", ap) - m0.sum("controller_runtime_reconcile_time_seconds_sum", ap)
	q := map[string]string{"name": "accesspolicy"}
	res.apQueueWait = m1.sum("workqueue_queue_duration_seconds_sum", q) - m0.sum("workqueue_queue_duration_seconds_sum", q)
	res.apWaits = m1.sum("workqueue_queue_duration_seconds_count", q) - m0.sum("workqueue_queue_duration_seconds_count", q)
	res.apWorkers = int(m1.sum("controller_runtime_max_concurrent_reconciles", ap))
	d := w1.sub(w0)
	res.opWrites = d.of(whoOperator)
	res.opFailed = f1.sub(f0).of(whoOperator)
	res.bodyBytes = map[string]float64{}
	for k, v := range a1.by("apiserver_request_body_size_bytes_sum", "resource") {
		if dd := v - a0.by("apiserver_request_body_size_bytes_sum", "resource")[k]; dd > 0 {
			res.bodyBytes[k] = dd
		}
	}

	// The bare minimum: the same objects, created directly.
	var nps networkingv1.NetworkPolicyList
	if err := c.admin.List(c.ctx, &nps, client.MatchingLabels{itmv1.LabelManagedBy: itmv1.ManagedByValue}); err != nil {
		return nil, err
	}
	res.nps = len(nps.Items)
	for _, np := range nps.Items {
		for _, r := range np.Spec.Ingress {
			res.cidrs += len(r.From)
		}
	}
	logf("baseline: a plain client creates the same %d NetworkPolicies in fresh namespaces", len(nps.Items))
	if err := parallel(32, 2**policies, func(k int) error {
		return ignoreExists(c.admin.Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "base-" + nsName(k)}}))
	}); err != nil {
		return nil, err
	}
	copies := make([]*networkingv1.NetworkPolicy, len(nps.Items))
	for i, np := range nps.Items {
		copies[i] = &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "base-" + np.Namespace, Name: np.Name, Labels: map[string]string{"bench": "baseline"}},
			Spec:       np.Spec,
		}
	}
	time.Sleep(2 * time.Second)
	t1 := time.Now()
	if err := parallel(16, len(copies), func(i int) error { return c.admin.Create(c.ctx, copies[i]) }); err != nil {
		return nil, err
	}
	res.baseline = time.Since(t1)
	logf("baseline: %s", ms(res.baseline))
	return res, nil
}

func first(w, _ writes) writes { return w }

func perGroupOf(n, g int) int {
	k := 0
	for i := range n {
		if groupOf(i) == g {
			k++
		}
	}
	return k
}

func (r *convResult) report(rep *report, n int) {
	ratio := r.operator.Seconds() / r.baseline.Seconds()
	s := "convergence"
	rep.add(s, fmt.Sprintf("%d policies created → every NetworkPolicy and status converged (%d devices, %d NetworkPolicies, %d CIDRs)", *policies, n, r.nps, r.cidrs),
		ms(r.operator), "", "")
	rep.add(s, fmt.Sprintf("bare minimum: a plain client creating the same %d NetworkPolicies (16 in flight, as the operator's workers)", r.nps), ms(r.baseline), "", "")
	rep.add(s, "operator / bare minimum", fmt.Sprintf("%.2f×", ratio), "≤ 1.5×", yes(ratio <= 1.5))
	meanWait := 0.0
	if r.apWaits > 0 {
		meanWait = r.apQueueWait / r.apWaits
	}
	rep.detail("### Where the operator's convergence time goes\n\n"+
		"Between the first AccessPolicy create and convergence plus 3 s (manager metrics, summed over the replicas; writes from the API server's audit log, the operator's ServiceAccount only; bytes are request bodies of every writer, and only the operator writes NetworkPolicies then):\n\n"+
		"- reconciles by controller: %s\n"+
		"- AccessPolicy controller: %.0f reconcile errors, %.1f s spent reconciling in total over %d workers, %.0f queue waits averaging %.0f ms\n"+
		"- operator writes by resource: %s (failed: %s)\n"+
		"- request bytes by resource: %s\n"+
		"- manager CPU: %s (both replicas)\n",
		list(r.reconciles, 1), r.apErrors, r.apReconcileSeconds, r.apWorkers, r.apWaits, meanWait*1000,
		list(r.opWrites, 1), list(r.opFailed, 1), bytesList(r.bodyBytes), ms(r.cpu))
}

func bytesList(m map[string]float64) string {
	k := map[string]float64{}
	for r, v := range m {
		k[r] = v / 1024
	}
	return list(k, 1) + " (KiB)"
}

// --- churn --------------------------------------------------------------

type churnResult struct {
	lat          []time.Duration
	timeouts     int
	unsettled    int
	achieved     float64
	rate         float64
	opWrites     map[string]float64
	changes      int
	churnChanges int64
	npsPer       int
	// The API server's ceiling and what the target needs of it.
	objects       int
	ceiling       float64
	ceilingKiB    float64
	needed, bound float64
}

// churn measures posture change → every affected NetworkPolicy while
// other devices' postures flip at rate per second.
func churn(c *cluster, n, changes int, rate float64) (*churnResult, error) {
	ctx, stop := context.WithCancel(c.ctx)
	defer stop()
	nw, err := watchNPs(ctx, c)
	if err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second) // the watch's initial list
	// Measured devices: every 97th; the churn never touches them.
	var measured []int
	for i := 0; i < n; i += 97 {
		measured = append(measured, i)
	}
	stopChurn := make(chan struct{})
	var churned atomic.Int64
	var churnWG sync.WaitGroup
	state := make([]atomic.Bool, n) // true: churned to unencrypted
	started := time.Now()
	if rate > 0 {
		churnWG.Add(1)
		go func() {
			defer churnWG.Done()
			rng := rand.New(rand.NewPCG(5, 6))
			sem := make(chan struct{}, 64)
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			for {
				select {
				case <-stopChurn:
					return
				case <-tick.C:
				}
				i := rng.IntN(n)
				if i%97 == 0 {
					i = (i + 1) % n
				}
				select {
				case sem <- struct{}{}:
				default:
					continue // the client cannot keep up; the achieved rate says so
				}
				churnWG.Add(1)
				go func() {
					defer churnWG.Done()
					defer func() { <-sem }()
					v := !state[i].Load()
					if setEncrypted(c, devName(i), !v) == nil {
						state[i].Store(v)
						churned.Add(1)
					}
				}()
			}
		}()
		time.Sleep(10 * time.Second) // let the churn reach its rate
	}
	w0, _ := c.audit.snapshot()
	ch0 := churned.Load()
	t0 := time.Now()
	logf("measuring %d posture changes under %.0f background changes/s", changes, rate)
	rng := rand.New(rand.NewPCG(1, 2))
	res := &churnResult{rate: rate, changes: changes}
	res.npsPer = len(affected(0))
	var last int
	for k := range changes {
		if time.Since(t0) > *churnFor && k%2 == 0 {
			logf("  stopped after %d changes: -churn-for %s is up", k, *churnFor)
			break
		}
		i := last
		deny := k%2 == 0
		if deny {
			i = measured[rng.IntN(len(measured))]
		}
		// Each change starts from its opposite: after a change that timed
		// out, wait for it to land (else the next one would find its
		// target already reached and count 0 s).
		if _, ok := nw.waitFor(affected(i), addrOf(i), deny, 30*time.Second); !ok {
			res.unsettled++
			if !deny { // put it back, unmeasured
				if err := setEncrypted(c, devName(i), true); err != nil {
					return nil, err
				}
			}
			last = i
			continue
		}
		sent := time.Now()
		if err := setEncrypted(c, devName(i), !deny); err != nil {
			return nil, err
		}
		done, ok := nw.waitFor(affected(i), addrOf(i), !deny, 30*time.Second)
		if !ok {
			res.timeouts++
		} else {
			res.lat = append(res.lat, max(done.Sub(sent), 0))
		}
		last = i
		time.Sleep(time.Duration(rng.Int64N(int64(500 * time.Millisecond)))) // changes are not in lockstep with the churn
	}
	elapsed := time.Since(t0)
	res.churnChanges = churned.Load() - ch0
	res.achieved = float64(res.churnChanges) / elapsed.Seconds()
	w1, _ := c.audit.snapshot()
	res.opWrites = w1.sub(w0).of(whoOperator)
	for k, v := range res.opWrites {
		res.opWrites[k] = v / elapsed.Seconds()
	}
	close(stopChurn)
	churnWG.Wait()
	// Put every churned device back, so what follows starts from the
	// converged state.
	_ = parallel(16, n, func(i int) error {
		if state[i].Load() {
			return setEncrypted(c, devName(i), true)
		}
		return nil
	})
	logf("churn ran %s", time.Since(started).Round(time.Second))

	// What would any design need? Each change touches one object in each of
	// npsPer namespaces; with changes to one object coalesced, every object
	// touched within the p99 bound L must be rewritten within it:
	// objects × (1 − e^(−λL)) / L writes a second, λ the touches per
	// object per second. And what can the API server take? A plain client
	// rewriting the baseline's copies in a loop, nothing else writing.
	var all networkingv1.NetworkPolicyList
	if err := c.admin.List(c.ctx, &all, client.MatchingLabels{itmv1.LabelManagedBy: itmv1.ManagedByValue}); err != nil {
		return nil, err
	}
	res.objects = len(all.Items)
	res.bound = 1
	if n > 10000 {
		res.bound = 5
	}
	lambda := res.achieved * float64(res.npsPer) / float64(max(res.objects, 1))
	res.needed = float64(res.objects) * (1 - math.Exp(-lambda*res.bound)) / res.bound
	nw.quiet(5*time.Second, time.Minute) // the operator's writes for the devices put back
	if res.ceiling, res.ceilingKiB, err = ceiling(c, 15*time.Second); err != nil {
		logf("ceiling not measured: %v", err)
	} else {
		logf("ceiling: %.0f NetworkPolicy updates/s of %.1f KiB; the target needs %.0f/s", res.ceiling, res.ceilingKiB, res.needed)
	}
	return res, nil
}

// ceiling is how many NetworkPolicy updates a second the API server takes
// from a plain client, and their mean size: the convergence baseline's
// copies rewritten in a loop for d (each update drops or puts back the
// last CIDR), 16 in flight as the operator's workers, one writer per
// object.
func ceiling(c *cluster, d time.Duration) (float64, float64, error) {
	var l networkingv1.NetworkPolicyList
	if err := c.admin.List(c.ctx, &l, client.MatchingLabels{"bench": "baseline"}); err != nil {
		return 0, 0, err
	}
	if len(l.Items) == 0 {
		return 0, 0, fmt.Errorf("no baseline NetworkPolicies to rewrite")
	}
	var done, bytes atomic.Int64
	stop := time.Now().Add(d)
	t0 := time.Now()
	err := parallel(16, 16, func(w int) error {
		var mine []*networkingv1.NetworkPolicy
		var last []networkingv1.NetworkPolicyPeer
		for i := w; i < len(l.Items); i += 16 {
			if np := &l.Items[i]; len(np.Spec.Ingress) > 0 && len(np.Spec.Ingress[0].From) > 1 {
				mine = append(mine, np)
				last = append(last, *np.Spec.Ingress[0].From[len(np.Spec.Ingress[0].From)-1].DeepCopy())
			}
		}
		dropped := make([]bool, len(mine))
		for k := 0; len(mine) > 0 && time.Now().Before(stop); k++ {
			i := k % len(mine)
			np, from := mine[i], mine[i].Spec.Ingress[0].From
			if dropped[i] {
				np.Spec.Ingress[0].From = append(from, last[i])
			} else {
				np.Spec.Ingress[0].From = from[:len(from)-1]
			}
			if err := c.admin.Update(c.ctx, np); err != nil {
				return err
			}
			dropped[i] = !dropped[i]
			done.Add(1)
			if b, err := json.Marshal(np); err == nil {
				bytes.Add(int64(len(b)))
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	n := done.Load()
	return float64(n) / time.Since(t0).Seconds(), float64(bytes.Load()) / float64(max(n, 1)) / 1024, nil
}

func (r *churnResult) report(rep *report, n int) {
	s := "churn"
	target, limit := "p99 < 1 s", time.Second
	if n > 10000 {
		target, limit = "p99 < 5 s (100,000 devices)", 5*time.Second
	}
	met := yes(r.timeouts == 0 && r.unsettled == 0 && len(r.lat) > 0 && pct(r.lat, 99) < limit)
	rep.add(s, fmt.Sprintf("posture change → all %d affected NetworkPolicies, %d devices, under %.1f other device changes/s (asked %.0f/s): p50 / p99 / max", r.npsPer, n, r.achieved, r.rate),
		pcts(r.lat)+fmt.Sprintf(", %d timed out (30 s), %d not sent (the previous change had not landed 30 s later)", r.timeouts, r.unsettled), target, met)
	rep.add(s, "operator writes per second meanwhile", list(r.opWrites, 1), "", "")
	rep.add(s, "ceiling: a plain client rewriting the convergence baseline's NetworkPolicies in a loop (16 in flight, nothing else writing)",
		fmt.Sprintf("%.0f updates/s of %.1f KiB (JSON)", r.ceiling, r.ceilingKiB), "", "")
	rep.add(s, fmt.Sprintf("updates/s any design needs for p99 < %.0f s: each of the %d objects a change touches rewritten within it, changes to one object coalesced (%d objects × (1 − e^(−λ·%.0f s)) / %.0f s, λ = %.2f touches per object per second)",
		r.bound, r.npsPer, r.objects, r.bound, r.bound, r.achieved*float64(r.npsPer)/float64(max(r.objects, 1))),
		fmt.Sprintf("%.0f/s", r.needed), "≤ the ceiling", yes(r.needed <= r.ceiling))
}

// --- steady state -----------------------------------------------------------

func steady(c *cluster, rep *report, d time.Duration) error {
	logf("steady state for %s (nothing changes; provider check every %s; 10-minute tokens renewed after 8)", d, *providerCheck)
	time.Sleep(10 * time.Second) // the churn's last writes
	w0, _ := c.audit.snapshot()
	cpu0 := make([]time.Duration, len(c.managers))
	for i, m := range c.managers {
		cpu0[i] = m.CPU()
	}
	t0 := time.Now()
	select {
	case <-c.ctx.Done():
		return c.ctx.Err()
	case <-time.After(d):
	}
	elapsed := time.Since(t0)
	w1, _ := c.audit.snapshot()
	diff := w1.sub(w0)
	op := diff.of(whoOperator)
	// Renewing a token is a TokenRequest (serviceaccounts/token) and the
	// update of its Secret: each Secret write pairs with one request.
	renewals := min(op["secrets"], op["serviceaccounts/token"])
	other := total(op) - op["leases"] - 2*renewals
	rest := map[string]float64{}
	for k, v := range op {
		rest[k] = v
	}
	delete(rest, "leases")
	rest["secrets"] -= renewals
	rest["serviceaccounts/token"] -= renewals
	s := "steady"
	rep.add(s, fmt.Sprintf("operator writes in %s besides its leader-election Lease and renewed tokens (%d replicas, leader election on)", elapsed.Round(time.Second), len(c.managers)),
		fmt.Sprintf("%.0f (%s)", other, list(rest, 1)), "0", yes(other == 0))
	rep.add(s, "operator Lease writes / token renewals (TokenRequest + Secret update each) in the window", fmt.Sprintf("%.0f / %.0f", op["leases"], renewals), "leader-election renewals / one per token renewed", "")
	var cpus []string
	for i, m := range c.managers {
		cpu := m.CPU() - cpu0[i]
		cpus = append(cpus, fmt.Sprintf("%s (%.1f%% of a core)", ms(cpu), 100*cpu.Seconds()/elapsed.Seconds()))
	}
	rep.add(s, "manager CPU per replica in the window", fmt.Sprint(cpus), "", "")
	rep.add(s, "writes by anyone else in the window", list(sumOthers(diff), 1), "", "")
	return nil
}

func sumOthers(w writes) map[string]float64 {
	out := map[string]float64{}
	for k, v := range w {
		who, r, _ := cutWho(k)
		if who != whoOperator {
			out[who+" "+r] += v
		}
	}
	return out
}

func cutWho(k string) (string, string, bool) {
	for i := range k {
		if k[i] == '|' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}
