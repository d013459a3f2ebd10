// Command access benchmarks AccessPolicy enforcement against the real
// control plane and the real manager binary (under its generated RBAC):
// N Devices of people in G groups, P policies over 2·P namespaces. It
// measures the latency from a device's posture change (a patch of its
// status) to every affected NetworkPolicy reflecting it, the NetworkPolicy
// writes per change, and, for 100,000 addresses, the CIDR count and the
// largest object, contiguous and with 5% random holes.
//
//	go run ./test/bench/access -devices 10000 -policies 100
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/cidr"
	"github.com/itmanager-io/itmanager/internal/netpol"
	"github.com/itmanager-io/itmanager/test/bench/benchkit"
)

var (
	devices     = flag.Int("devices", 10000, "Devices, 10 per person.")
	groups      = flag.Int("groups", 10, "Groups; person p is in group p mod groups.")
	policies    = flag.Int("policies", 100, "AccessPolicies; policy j grants group j mod groups access to namespaces 2j and 2j+1.")
	changes     = flag.Int("changes", 200, "Posture changes to measure (half deny a device, half allow it again).")
	addresses   = flag.Int("addresses", 100000, "Addresses for the CIDR and object-size measurement.")
	out         = flag.String("out", "", "Also write the report to this file.")
	managerArgs = flag.String("manager-args", "", "Extra manager flags, space-separated.")
)

func main() { benchkit.Main(run) }

// addrOf is device i's address: 10.0.0.0 + i, so a group's devices form
// runs of 10 interleaved with the other groups'.
func addrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func devName(i int) string { return fmt.Sprintf("bench-%05d", i) }

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var b strings.Builder
	sizeReport(&b)
	fmt.Print(b.String())

	m, err := benchkit.StartManager(ctx, false, strings.Fields(*managerArgs)...)
	if err != nil {
		return err
	}
	defer m.Stop()
	admin := m.Admin
	cs, err := kubernetes.NewForConfig(m.AdminConfig)
	if err != nil {
		return err
	}

	n, people := *devices, (*devices+9)/10
	benchkit.Logf("creating %d namespaces, %d Active people in %d groups, %d Devices with encrypted disks", 2**policies, people, *groups, n)
	if err := benchkit.Parallel(32, 2**policies, func(i int) error {
		return admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-ns-%03d", i)}})
	}); err != nil {
		return err
	}
	if err := benchkit.Parallel(32, people, func(p int) error {
		r := &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("person-%04d", p)},
			Spec: itmv1.OnboardingRequestSpec{
				Person: itmv1.Person{DisplayName: "Person", Email: fmt.Sprintf("p%d@example.com", p)},
				Groups: []string{fmt.Sprintf("group-%02d", p%*groups)},
				// The admin may skip approval; no AccountProvider exists, so
				// the onboarding controller makes each person Active at once.
				ApprovalRequired: ptr.To(false),
			},
		}
		return admin.Create(ctx, r)
	}); err != nil {
		return err
	}
	if err := waitActive(ctx, admin, people, 10*time.Minute); err != nil {
		return err
	}
	if err := benchkit.Parallel(32, n, func(i int) error {
		d := &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: devName(i)},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Assignee: fmt.Sprintf("person-%04d", i/10),
				Addresses: []string{addrOf(i).String()}},
		}
		if err := admin.Create(ctx, d); err != nil {
			return err
		}
		return setEncrypted(ctx, admin, devName(i), true)
	}); err != nil {
		return err
	}

	npWatch, err := watchNetworkPolicies(ctx, admin)
	if err != nil {
		return err
	}
	benchkit.Logf("creating %d AccessPolicies (each: one group, two namespaces, disk encryption required)", *policies)
	t0 := time.Now()
	if err := benchkit.Parallel(16, *policies, func(j int) error {
		return admin.Create(ctx, &itmv1.AccessPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%03d", j)},
			Spec: itmv1.AccessPolicySpec{
				Subjects:     itmv1.Subjects{Groups: []string{fmt.Sprintf("group-%02d", j%*groups)}},
				Posture:      &itmv1.Posture{RequireDiskEncryption: true},
				Destinations: []itmv1.Destination{{Namespaces: []string{fmt.Sprintf("bench-ns-%03d", 2*j), fmt.Sprintf("bench-ns-%03d", 2*j+1)}, Ports: []itmv1.Port{{Port: 443}}}},
			},
		})
	}); err != nil {
		return err
	}
	perGroup := n / *groups
	if err := waitConverged(ctx, admin, *policies, int32(perGroup), 30*time.Minute); err != nil {
		return err
	}
	converge := time.Since(t0)
	benchkit.Logf("all %d policies enforced %s after the first create", *policies, converge.Round(time.Millisecond))
	time.Sleep(5 * time.Second) // let the last watch events drain

	before, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	benchkit.Logf("measuring %d posture changes", *changes)
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	var timeouts int
	for k := range *changes {
		i := rng.IntN(n)
		deny := k%2 == 0
		if !deny {
			i = lastDenied
		}
		group := (i / 10) % *groups
		var affected []string
		for j := group; j < *policies; j += *groups {
			for _, ns := range []int{2 * j, 2*j + 1} {
				affected = append(affected, fmt.Sprintf("bench-ns-%03d/%s", ns, netpol.Name(fmt.Sprintf("bench-%03d", j), 0)))
			}
		}
		sent := time.Now()
		if err := setEncrypted(ctx, admin, devName(i), !deny); err != nil {
			return err
		}
		done, ok := npWatch.waitFor(affected, addrOf(i), !deny, 30*time.Second)
		if !ok {
			timeouts++
			continue
		}
		lat = append(lat, done.Sub(sent))
		lastDenied = i
	}
	time.Sleep(3 * time.Second) // writes after the last change would show here
	after, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	npWrites := after.Sub(before, "networkpolicies")
	queue := benchkit.QueueStats(ctx, m.MetricsURL, "accesspolicy")

	fmt.Fprintf(&b, "\n## Enforcement at scale\n\n")
	fmt.Fprintf(&b, "%d Devices (10 per person, %d people in %d groups), %d AccessPolicies, %d namespaces; each device's group is granted by %d policies over %d NetworkPolicies.\n",
		n, people, *groups, *policies, 2**policies, *policies / *groups, 2**policies / *groups)
	fmt.Fprintf(&b, "Control plane: etcd v3.6.16 + kube-apiserver v1.36.3 from source; %d cores. Reproduce: `go run ./test/bench/access -devices %d -groups %d -policies %d -changes %d` (or `make bench-access`).\n\n",
		benchkit.RuntimeCPUs(), n, *groups, *policies, *changes)
	fmt.Fprintf(&b, "| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| %d policies created → all enforced | %s | |\n", *policies, converge.Round(time.Millisecond))
	fmt.Fprintf(&b, "| posture change → every affected NetworkPolicy (n=%d, %d timed out): p50 / p99 / max | %s / %s / %s | p99 < 2 s |\n",
		len(lat), timeouts, benchkit.Pct(lat, 50), benchkit.Pct(lat, 99), benchkit.Pct(lat, 100))
	fmt.Fprintf(&b, "| NetworkPolicy writes per change | %.2f (%.0f writes / %d changes) | %d (only the affected objects) |\n",
		npWrites/float64(*changes), npWrites, *changes, 2**policies / *groups)
	fmt.Fprintf(&b, "| other writes during the changes | %.0f%s | %d Device status patches + %d AccessPolicy status writes |\n",
		after.Total()-before.Total()-npWrites, after.Others(before, 1, "networkpolicies"), *changes, *changes**policies / *groups)
	fmt.Fprintf(&b, "| manager RSS peak | %s | < 300 MiB |\n", benchkit.MiB(m.RSS.Peak()))
	fmt.Fprintf(&b, "\nAccessPolicy controller over the whole run: %s\n", queue)
	fmt.Print("\n" + b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

// setEncrypted reports the device's disk encryption, as its agent would,
// retrying when the Device controller's status write got there first.
func setEncrypted(ctx context.Context, admin client.Client, name string, encrypted bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &itmv1.Device{}
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, d); err != nil {
			return err
		}
		if d.Status.Observed == nil {
			d.Status.Observed = &itmv1.ObservedFacts{}
		}
		d.Status.Observed.DiskEncrypted = ptr.To(encrypted)
		return admin.Status().Update(ctx, d)
	})
}

// lastDenied is the device the previous change denied; the next one allows
// it again, so every change has a visible effect.
var lastDenied int

// sizeReport compiles 100,000 addresses, contiguous and with 5% holes, and
// reports the CIDRs, the objects and the largest object.
func sizeReport(b *strings.Builder) {
	fmt.Fprintf(b, "# AccessPolicy benchmark\n\n## NetworkPolicy size at %d addresses\n\n", *addresses)
	fmt.Fprintf(b, "| addresses | CIDRs | NetworkPolicies (≤ %d CIDRs each) | largest object (JSON) |\n|---|---|---|---|\n", netpol.MaxCIDRsPerObject)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, holes := range []float64{0, 0.05} {
		var addrs []netip.Addr
		for i := range *addresses {
			if rng.Float64() >= holes {
				addrs = append(addrs, addrOf(i))
			}
		}
		prefixes := cidr.Aggregate(addrs)
		owner := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "size", UID: "00000000-0000-0000-0000-000000000000"}}
		nps := netpol.Compile(netpol.Input{Owner: owner, Prefixes: prefixes, Targets: []netpol.Target{{Namespace: "ns",
			Destinations: []itmv1.Destination{{Ports: []itmv1.Port{{Port: 443}}}}}}})
		largest := 0
		for _, np := range nps {
			data, _ := json.Marshal(np)
			largest = max(largest, len(data))
		}
		label := "contiguous"
		if holes > 0 {
			label = fmt.Sprintf("%.0f%% random holes", holes*100)
		}
		fmt.Fprintf(b, "| %d, %s | %d | %d | %.1f KiB (limit 1.5 MiB) |\n", len(addrs), label, len(prefixes), len(nps), float64(largest)/1024)
	}
}

func waitConverged(ctx context.Context, admin client.Client, policies int, perGroup int32, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		list := &itmv1.AccessPolicyList{}
		if err := admin.List(ctx, list); err != nil {
			return err
		}
		done := 0
		for _, p := range list.Items {
			if p.Status.Devices.Allowed == perGroup && p.Status.ObservedGeneration == p.Generation && p.Status.NetworkPolicies == 2 {
				done++
			}
		}
		if done == policies {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("policies not enforced within %s", timeout)
}

// npWatcher follows every NetworkPolicy's allowed prefixes through a watch.
type npWatcher struct {
	mu      sync.Mutex
	cond    *sync.Cond
	current map[string][]netip.Prefix
	seen    time.Time
}

func watchNetworkPolicies(ctx context.Context, admin client.WithWatch) (*npWatcher, error) {
	w, err := admin.Watch(ctx, &networkingv1.NetworkPolicyList{}, client.MatchingLabels{netpol.LabelManagedBy: netpol.ManagedByValue})
	if err != nil {
		return nil, err
	}
	nw := &npWatcher{current: map[string][]netip.Prefix{}}
	nw.cond = sync.NewCond(&nw.mu)
	go func() {
		for ev := range w.ResultChan() {
			np, ok := ev.Object.(*networkingv1.NetworkPolicy)
			if !ok {
				continue
			}
			var ps []netip.Prefix
			for _, r := range np.Spec.Ingress {
				for _, f := range r.From {
					if p, err := netip.ParsePrefix(f.IPBlock.CIDR); err == nil {
						ps = append(ps, p)
					}
				}
			}
			key := np.Namespace + "/" + np.Name
			nw.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(nw.current, key)
			} else {
				nw.current[key] = ps
			}
			nw.seen = time.Now()
			nw.cond.Broadcast()
			nw.mu.Unlock()
		}
	}()
	go func() {
		<-ctx.Done()
		w.Stop()
	}()
	return nw, nil
}

// waitFor waits until each of the NetworkPolicies allows addr (or no longer
// does) and returns when the last event that made it so arrived.
func (nw *npWatcher) waitFor(keys []string, addr netip.Addr, allowed bool, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	go func() { time.Sleep(timeout); nw.mu.Lock(); nw.cond.Broadcast(); nw.mu.Unlock() }()
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for {
		ok := true
		for _, k := range keys {
			has := slices.ContainsFunc(nw.current[k], func(p netip.Prefix) bool { return p.Contains(addr) })
			if has != allowed {
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

// waitActive waits for n OnboardingRequests to be Active.
func waitActive(ctx context.Context, admin client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list itmv1.OnboardingRequestList
		if err := admin.List(ctx, &list); err != nil {
			return err
		}
		active := 0
		for _, r := range list.Items {
			if r.Status.Phase == itmv1.OnboardingPhaseActive {
				active++
			}
		}
		if active >= n {
			benchkit.Logf("%d people Active", active)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d OnboardingRequests Active after %s", active, n, timeout)
		}
		time.Sleep(time.Second)
	}
}
