// Command onboarding benchmarks joiners and leavers against the real control
// plane, the real manager binary (under its generated RBAC, with the
// admission policies) and a real OpenLDAP slapd on loopback: N people, each
// with a Kubernetes account (ServiceAccount + bound-token kubeconfig), an
// LDAP entry with group membership, and a laptop from a shared pool. It
// measures the time from create to Active and from offboard to Offboarded,
// the API writes per person, the writes in the steady state afterwards, and
// checks that offboarding left nothing behind.
//
//	go run ./test/bench/onboarding -people 500
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/testenv"
	"github.com/itmanager-io/itmanager/test/bench/benchkit"
)

var (
	people      = flag.Int("people", 500, "People to onboard and offboard.")
	groups      = flag.Int("groups", 10, "Groups; person p is in group p mod groups.")
	steady      = flag.Duration("steady", 2*time.Minute, "How long to count writes once everyone is Active.")
	out         = flag.String("out", "", "Also write the report to this file.")
	managerArgs = flag.String("manager-args", "", "Extra manager flags, space-separated.")
)

const usersNS = "bench-users"

func main() { benchkit.Main(run) }

func personName(p int) string { return fmt.Sprintf("person-%04d", p) }

func run() error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	benchkit.Logf("starting slapd on loopback")
	dir, err := ldapServer()
	if err != nil {
		return err
	}
	defer func() { _ = dir.Stop() }()
	m, err := benchkit.StartManager(ctx, true, strings.Fields(*managerArgs)...)
	if err != nil {
		return err
	}
	defer m.Stop()
	admin := m.Admin
	cs, err := kubernetes.NewForConfig(m.AdminConfig)
	if err != nil {
		return err
	}

	if err := admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "bench-ldap"},
		Data: map[string][]byte{"password": []byte(dir.AdminPassword)}}); err != nil {
		return err
	}
	for _, p := range []*itmv1.AccountProvider{
		{ObjectMeta: metav1.ObjectMeta{Name: "kube"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Default: true,
			Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: usersNS}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ldap"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP, Default: true,
			LDAP: &itmv1.LDAPProviderSpec{URL: dir.URL, Insecure: true, BindDN: dir.AdminDN, UsersDN: dir.PeopleDN, GroupsDN: dir.GroupsDN,
				BindPasswordSecretRef: itmv1.SecretKeyReference{Name: "bench-ldap", Key: "password"}}}},
	} {
		if err := admin.Create(ctx, p); err != nil {
			return err
		}
	}
	if err := waitProvidersReady(ctx, admin, time.Minute); err != nil {
		return err
	}
	n := *people
	benchkit.Logf("creating %d laptops in a shared pool", n)
	if err := benchkit.Parallel(32, n, func(i int) error {
		return admin.Create(ctx, &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lt-%04d", i), Labels: map[string]string{"pool": "bench"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}})
	}); err != nil {
		return err
	}
	time.Sleep(5 * time.Second) // the Device controller's first status writes

	phases, err := watchPhases(ctx, admin)
	if err != nil {
		return err
	}
	before, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}
	cpu0 := m.CPUTime()
	benchkit.Logf("onboarding %d people (Kubernetes + LDAP accounts, %d groups, one laptop each)", n, *groups)
	created := make([]time.Time, n)
	t0 := time.Now()
	if err := benchkit.Parallel(16, n, func(p int) error {
		created[p] = time.Now()
		return admin.Create(ctx, &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: personName(p)},
			Spec: itmv1.OnboardingRequestSpec{
				Person:           itmv1.Person{DisplayName: fmt.Sprintf("Person %d", p), Email: fmt.Sprintf("p%d@example.com", p)},
				Groups:           []string{fmt.Sprintf("group-%02d", p%*groups)},
				ApprovalRequired: ptr.To(false), // the admin may say so
				Devices:          []itmv1.DeviceRequest{{Class: itmv1.DeviceClassLaptop, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "bench"}}}},
			},
		})
	}); err != nil {
		return err
	}
	activeAll, err := phases.waitAll(itmv1.OnboardingPhaseActive, n, 30*time.Minute)
	if err != nil {
		return err
	}
	onboardTime := activeAll.Sub(t0)
	onboardLat := phases.latencies(itmv1.OnboardingPhaseActive, created)
	onboardCPU := m.CPUTime() - cpu0
	benchkit.Logf("all %d Active after %s", n, onboardTime.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	afterOnboard, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}

	benchkit.Logf("counting writes for %s with nothing changing", *steady)
	time.Sleep(*steady)
	afterSteady, err := benchkit.ScrapeWrites(ctx, cs)
	if err != nil {
		return err
	}

	benchkit.Logf("offboarding everyone")
	offboarded := make([]time.Time, n)
	t1 := time.Now()
	if err := benchkit.Parallel(16, n, func(p int) error {
		offboarded[p] = time.Now()
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			r := &itmv1.OnboardingRequest{}
			if err := admin.Get(ctx, client.ObjectKey{Name: personName(p)}, r); err != nil {
				return err
			}
			r.Spec.Offboard = true
			return admin.Update(ctx, r)
		})
	}); err != nil {
		return err
	}
	offAll, err := phases.waitAll(itmv1.OnboardingPhaseOffboarded, n, 30*time.Minute)
	if err != nil {
		return err
	}
	offboardTime := offAll.Sub(t1)
	offboardLat := phases.latencies(itmv1.OnboardingPhaseOffboarded, offboarded)
	left, err := leftovers(ctx, admin, dir)
	if err != nil {
		return err
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Onboarding benchmark\n\n")
	fmt.Fprintf(&b, "%d people, each with a Kubernetes account (ServiceAccount + kubeconfig Secret with a bound token), an LDAP entry in one of %d groups, and a laptop from a shared pool of %d; approval not required (set by the admin).\n",
		n, *groups, n)
	fmt.Fprintf(&b, "Control plane: etcd v3.6.16 + kube-apiserver v1.36.3 from source, OpenLDAP slapd from Debian on loopback; the real manager binary under its generated RBAC; %d cores. Reproduce: `go run ./test/bench/onboarding -people %d` (or `make bench-onboarding`).\n\n",
		benchkit.RuntimeCPUs(), n)
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| %d created → all Active | %s (%.1f people/s) |\n", n, onboardTime.Round(time.Millisecond), float64(n)/onboardTime.Seconds())
	fmt.Fprintf(&b, "| create → Active per person: p50 / p99 / max | %s / %s / %s |\n", benchkit.Pct(onboardLat, 50), benchkit.Pct(onboardLat, 99), benchkit.Pct(onboardLat, 100))
	fmt.Fprintf(&b, "| manager CPU while onboarding | %s (%.0f ms per person) |\n", onboardCPU.Round(time.Millisecond), float64(onboardCPU.Milliseconds())/float64(n))
	fmt.Fprintf(&b, "| API writes per person while onboarding | %.1f%s |\n", (afterOnboard.Total()-before.Total())/float64(n), perPerson(afterOnboard, before, n))
	fmt.Fprintf(&b, "| writes in %s of steady state | %.0f%s |\n", *steady, afterSteady.Total()-afterOnboard.Total(), afterSteady.Others(afterOnboard, steady.Minutes()))
	fmt.Fprintf(&b, "| all offboarded → all Offboarded | %s |\n", offboardTime.Round(time.Millisecond))
	fmt.Fprintf(&b, "| offboard → Offboarded per person: p50 / p99 / max | %s / %s / %s |\n", benchkit.Pct(offboardLat, 50), benchkit.Pct(offboardLat, 99), benchkit.Pct(offboardLat, 100))
	fmt.Fprintf(&b, "| left behind after offboarding | %s |\n", left)
	fmt.Fprintf(&b, "| manager RSS peak | %s |\n", benchkit.MiB(m.RSS.Peak()))
	fmt.Fprintf(&b, "\nSteady-state writes: the manager runs without leader election here, so Lease writes are the kube-apiserver's own identity Lease (renewed every 10 s), not the operator's.\n")
	fmt.Fprintf(&b, "\nOnboarding controller over the whole run: %s\n", benchkit.QueueStats(ctx, m.MetricsURL, "onboarding"))
	fmt.Print("\n" + b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

func perPerson(after, before benchkit.Writes, n int) string {
	var parts []string
	for _, r := range []string{"serviceaccounts", "secrets", "onboardingrequests", "devices", "events"} {
		if d := after.Sub(before, r); d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f", r, d/float64(n)))
		}
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func ldapServer() (*testenv.LDAPServer, error) { return testenv.StartLDAP(testenv.LDAPOptions{}) }

func waitProvidersReady(ctx context.Context, admin client.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var list itmv1.AccountProviderList
		if err := admin.List(ctx, &list); err != nil {
			return err
		}
		ready := 0
		for _, p := range list.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == "Ready" && c.Status == metav1.ConditionTrue {
					ready++
				}
			}
		}
		if ready == len(list.Items) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("AccountProviders not Ready after %s", timeout)
}

// phaseWatch records when each request was first seen in each phase.
type phaseWatch struct {
	mu   sync.Mutex
	seen map[string]map[itmv1.OnboardingPhase]time.Time
}

func watchPhases(ctx context.Context, admin client.WithWatch) (*phaseWatch, error) {
	w, err := admin.Watch(ctx, &itmv1.OnboardingRequestList{})
	if err != nil {
		return nil, err
	}
	pw := &phaseWatch{seen: map[string]map[itmv1.OnboardingPhase]time.Time{}}
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			r, ok := ev.Object.(*itmv1.OnboardingRequest)
			if !ok {
				continue
			}
			now := time.Now()
			pw.mu.Lock()
			if pw.seen[r.Name] == nil {
				pw.seen[r.Name] = map[itmv1.OnboardingPhase]time.Time{}
			}
			if _, ok := pw.seen[r.Name][r.Status.Phase]; !ok {
				pw.seen[r.Name][r.Status.Phase] = now
			}
			pw.mu.Unlock()
		}
	}()
	return pw, nil
}

// waitAll waits until n requests were seen in phase and returns when the
// last one was.
func (pw *phaseWatch) waitAll(phase itmv1.OnboardingPhase, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		pw.mu.Lock()
		var last time.Time
		count := 0
		for _, phases := range pw.seen {
			if t, ok := phases[phase]; ok {
				count++
				if t.After(last) {
					last = t
				}
			}
		}
		pw.mu.Unlock()
		if count >= n {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d requests reached %s within %s", count, n, phase, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (pw *phaseWatch) latencies(phase itmv1.OnboardingPhase, from []time.Time) []time.Duration {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	out := make([]time.Duration, 0, len(from))
	for p, t0 := range from {
		if t, ok := pw.seen[personName(p)][phase]; ok {
			out = append(out, t.Sub(t0))
		}
	}
	return out
}

// leftovers counts what offboarding should have removed: kubeconfig
// Secrets, ServiceAccounts, assigned laptops, unlocked LDAP entries and
// group memberships.
func leftovers(ctx context.Context, admin client.Client, dir *testenv.LDAPServer) (string, error) {
	var sas corev1.ServiceAccountList
	if err := admin.List(ctx, &sas, client.InNamespace(usersNS), client.HasLabels{accounts.LabelUser}); err != nil {
		return "", err
	}
	var secrets corev1.SecretList
	if err := admin.List(ctx, &secrets, client.InNamespace(usersNS), client.HasLabels{accounts.LabelUser}); err != nil {
		return "", err
	}
	var devices itmv1.DeviceList
	if err := admin.List(ctx, &devices); err != nil {
		return "", err
	}
	assigned := 0
	for _, d := range devices.Items {
		if d.Spec.Assignee != "" {
			assigned++
		}
	}
	c, err := dir.Admin()
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest(dir.PeopleDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=inetOrgPerson)(!(pwdAccountLockedTime=*)))", []string{"uid"}, nil))
	if err != nil {
		return "", err
	}
	unlocked := len(res.Entries)
	res, err = c.Search(ldap.NewSearchRequest(dir.GroupsDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=groupOfNames)", []string{"member"}, nil))
	if err != nil {
		return "", err
	}
	members := 0
	for _, e := range res.Entries {
		members += len(e.GetAttributeValues("member"))
	}
	all, err := c.Search(ldap.NewSearchRequest(dir.PeopleDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=inetOrgPerson)", []string{"uid"}, nil))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d ServiceAccounts, %d kubeconfig Secrets, %d assigned laptops, %d unlocked LDAP entries (of %d kept locked, Disable), %d group memberships",
		len(sas.Items), len(secrets.Items), assigned, unlocked, len(all.Entries), members), nil
}
