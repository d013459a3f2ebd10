package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

const usersNS = "bench-users"

// createProviders creates a Kubernetes AccountProvider issuing 10-minute
// tokens (the shortest allowed: renewed after 8, inside the steady state)
// and an LDAP one on the real slapd; neither is a default, so only the
// joiners, who name them, get accounts.
func createProviders(c *cluster, dir *testenv.LDAPServer) error {
	if err := c.admin.Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: usersNS,
		// The namespace the admin hands the Kubernetes provider.
		Labels: map[string]string{"itmanager.io/managed-namespace": "true"}}}); err != nil {
		return err
	}
	if err := c.admin.Create(c.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: "bench-ldap"},
		Data: map[string][]byte{"password": []byte(dir.AdminPassword)}}); err != nil {
		return err
	}
	for _, p := range []*itmv1.AccountProvider{
		{ObjectMeta: metav1.ObjectMeta{Name: "kube"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
			Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: usersNS, TokenTTL: &metav1.Duration{Duration: 10 * time.Minute}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ldap"}, Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP,
			LDAP: &itmv1.LDAPProviderSpec{URL: dir.URL, Insecure: true, BindDN: dir.AdminDN, UsersDN: dir.PeopleDN, GroupsDN: dir.GroupsDN,
				BindPasswordSecretRef: itmv1.SecretKeyReference{Name: "bench-ldap", Key: "password"}}}},
	} {
		if err := c.admin.Create(c.ctx, p); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var l itmv1.AccountProviderList
		if err := c.admin.List(c.ctx, &l); err != nil {
			return err
		}
		ready := 0
		var why []string
		for _, p := range l.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == "Ready" && cond.Status == metav1.ConditionTrue {
					ready++
				} else if cond.Type == "Ready" {
					why = append(why, p.Name+": "+cond.Reason+": "+cond.Message)
				}
			}
		}
		if ready == 2 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("AccountProviders not Ready within 2m: %v", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func joinerName(p int) string { return fmt.Sprintf("joiner-%04d", p) }

type onboardResult struct {
	all     time.Duration
	lat     []time.Duration
	perKind map[string]float64 // the operator's writes
	bench   float64            // the benchmark's own writes in the window
	cpu     time.Duration
}

// onboard creates n joiners, each with both providers and a laptop from a
// shared pool, and waits until every one is Active.
func onboard(c *cluster, n int) (*onboardResult, error) {
	logf("creating %d laptops in a shared pool", n)
	if err := parallel(32, n, func(i int) error {
		return c.admin.Create(c.ctx, &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lt-%04d", i), Labels: map[string]string{"pool": "bench"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}})
	}); err != nil {
		return nil, err
	}
	time.Sleep(5 * time.Second) // the Device controller's first status writes
	var mu sync.Mutex
	active := map[string]time.Time{}
	seen := func(r *itmv1.OnboardingRequest) {
		if r.Status.Phase != itmv1.OnboardingPhaseActive {
			return
		}
		mu.Lock()
		if _, ok := active[r.Name]; !ok {
			active[r.Name] = time.Now()
		}
		mu.Unlock()
	}
	// A watch from before the first create (follow opens it again if the
	// API server closes it).
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	if err := c.follow(ctx, &itmv1.OnboardingRequestList{}, nil, func(ev watch.Event) {
		if r, ok := ev.Object.(*itmv1.OnboardingRequest); ok && ev.Type != watch.Deleted {
			seen(r)
		}
	}); err != nil {
		return nil, err
	}
	w0, _ := c.audit.snapshot()
	cpu0 := c.managerCPU()
	logf("onboarding %d people (Kubernetes + LDAP accounts, a laptop each)", n)
	created := make([]time.Time, n)
	t0 := time.Now()
	if err := parallel(16, n, func(p int) error {
		created[p] = time.Now()
		return c.admin.Create(c.ctx, &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: joinerName(p)},
			Spec: itmv1.OnboardingRequestSpec{
				Person:           itmv1.Person{DisplayName: fmt.Sprintf("Joiner %d", p), Email: fmt.Sprintf("j%d@example.com", p)},
				Groups:           []string{"joiners"},
				AccountProviders: []string{"kube", "ldap"},
				ApprovalRequired: ptr.To(false),
				Devices:          []itmv1.DeviceRequest{{Class: itmv1.DeviceClassLaptop, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "bench"}}}},
			},
		})
	}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Minute)
	var last time.Time
	for {
		mu.Lock()
		k := 0
		for p := range n {
			if t, ok := active[joinerName(p)]; ok {
				k++
				if t.After(last) {
					last = t
				}
			}
		}
		mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d joiners Active within 30m", k, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := &onboardResult{all: last.Sub(t0)}
	mu.Lock()
	for p := range n {
		res.lat = append(res.lat, active[joinerName(p)].Sub(created[p]))
	}
	mu.Unlock()
	time.Sleep(3 * time.Second) // writes that follow Active would show here
	res.cpu = c.managerCPU() - cpu0
	w1, _ := c.audit.snapshot()
	d := w1.sub(w0)
	res.perKind = d.of(whoOperator)
	res.bench = total(d.of(whoBench))
	logf("all %d Active after %s", n, ms(res.all))
	return res, nil
}

func runOnboarding(c *cluster, rep *report, n int) error {
	res, err := onboard(c, n)
	if err != nil {
		return err
	}
	s := "onboarding"
	rep.add(s, fmt.Sprintf("%d people created → all Active (Kubernetes + LDAP on a real slapd, a laptop each)", n),
		fmt.Sprintf("%s (%.1f people/s)", ms(res.all), float64(n)/res.all.Seconds()), "", "")
	rep.add(s, "create → Active per person: p50 / p99 / max", pcts(res.lat), "", "")
	rep.add(s, "operator writes per person (audit log, the operator's ServiceAccount only; its leader-election Lease left out)",
		fmt.Sprintf("%s: %s", num((total(res.perKind)-res.perKind["leases"])/float64(n)), list(res.perKind, float64(n), "leases")), "", "")
	rep.add(s, "benchmark's own writes in the window (excluded above)", fmt.Sprintf("%.0f (%s per person)", res.bench, num(res.bench/float64(n))), "", "")
	rep.add(s, "manager CPU while onboarding", fmt.Sprintf("%s (%.0f ms per person)", ms(res.cpu), float64(res.cpu.Milliseconds())/float64(n)), "", "")
	return nil
}
