package controllers_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/agent"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// The API server restarts (etcd keeps its data) while agents check in, a
// rollout and an onboarding are half done; nothing in the test touches
// any of them afterwards.
var _ = Describe("An API server restart", Serial, func() {
	It("is survived unattended: check-ins, a rollout and an onboarding that were mid-way converge, each device upgraded once, and status tells the truth", func() {
		// outage is closed once the API server is down: the upgrades and
		// the account held mid-way go on then, so each has to report
		// into a dead API server and recover by itself.
		gate := &upgradeGate{outage: make(chan struct{})}
		outage := gate.outage
		var closeOutage sync.Once
		DeferCleanup(func() { closeOutage.Do(func() { close(outage) }) })

		By("an onboarding (Kubernetes and LDAP accounts) held right after its Kubernetes account was made")
		kube := kubeProvider()
		ld := ldapProvider(nil)
		Eventually(providerReady(ld.Name)).Should(Equal(metav1.ConditionTrue))
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{kube.Name, ld.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		held := make(chan struct{})
		stopOnboarding()
		stopOnboarding = startOnboarding(func(inner controllers.ProviderOpener, _ context.CancelFunc) controllers.ProviderOpener {
			return &holdAfterEnsure{inner: inner, user: r.Name, held: held, release: outage}
		})
		DeferCleanup(func() {
			stopOnboarding()
			stopOnboarding = startOnboarding(nil)
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())

		By("agents checking in through both check-in replicas: six in a rollout ring, two bystanders")
		ring := map[string]string{"ring": uniqueName("restart")}
		var fleet []*restartAgent
		for i := range 8 {
			var labels map[string]string
			if i < 6 {
				labels = ring
			}
			fleet = append(fleet, startRestartAgent(i, labels, gate))
		}
		rollout, bystanders := fleet[:6], fleet[6:]
		for _, a := range fleet {
			Eventually(conditionOf(a.name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
			Eventually(func() string { return osVersionOf(a.name) }).Should(Equal("1.0"))
		}
		record := recordUpgrades(ring)

		By("a rollout with maxUnavailable 2: two devices done, two upgrading, two pending")
		mw := window(ring, maxUnavailable(intstr.FromInt32(2)))
		Eventually(gate.held.Load).WithTimeout(30 * time.Second).Should(BeEquivalentTo(2))
		Eventually(windowStatus(mw.Name)).Should(HaveField("Devices", itmv1.UpgradeCounts{Succeeded: 2, InProgress: 2, Pending: 2}))
		Eventually(held).WithTimeout(30 * time.Second).Should(BeClosed())
		Expect(phaseOf(r.Name)()).NotTo(Equal(itmv1.OnboardingPhaseActive))

		By("stopping the API server: the process ends, etcd keeps its data")
		refusedBefore := max(gauge("itmanager_checkins_total", map[string]string{"code": "503"}), 0)
		stopped := time.Now()
		Expect(env.StopAPIServer(2 * time.Second)).To(Succeed())
		downAt := time.Now()
		var up atomic.Bool
		DeferCleanup(func() {
			if !up.Load() { // the spec failed while it was down: the suite goes on
				Expect(env.StartAPIServer(time.Minute)).To(Succeed())
			}
		})
		closeOutage.Do(func() { close(outage) })
		// Check-ins keep arriving and are refused, not lost: 503, retry.
		Eventually(func() float64 { return gauge("itmanager_checkins_total", map[string]string{"code": "503"}) }).
			Should(BeNumerically(">=", refusedBefore+float64(2*len(fleet))))
		// Down for longer than the CheckedIn threshold, so that every
		// device's check-in goes stale meanwhile.
		time.Sleep(time.Until(downAt.Add(staleAfter + time.Second)))

		By("starting it again on the same address, certificates, flags and etcd")
		// Watched from before the start: when the API server answers
		// /readyz again, and when each part has converged after that.
		conv := watchConvergence(fleet, mw.Name, int32(len(rollout)), r.Name)
		starting := time.Now()
		Expect(env.StartAPIServer(time.Minute)).To(Succeed())
		up.Store(true)
		back := time.Now()
		AddReportEntry("API server restart", fmt.Sprintf("stop %s, down %s, start until ready and admitting %s",
			downAt.Sub(stopped).Round(time.Millisecond), starting.Sub(downAt).Round(time.Millisecond), back.Sub(starting).Round(time.Millisecond)))

		By("converging without any poke from the test")
		Eventually(conv.pending).WithTimeout(60 * time.Second).Should(BeEmpty())
		AddReportEntry("Convergence after the API server answered /readyz again", conv.String())

		By("the admission policies are in force: the requester stamp is set and self-approval refused")
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		probe := joiner(nil)
		Expect(requester.Create(ctx, probe)).To(Succeed())
		Expect(probe.Annotations).To(HaveKey(itmv1.AnnotationRequestedBy))
		Expect(decide(requester, probe.Name, itmv1.OnboardingConditionApproved)).To(MatchError(ContainSubstring("may not approve")))

		By("every device was upgraded exactly once, never more than two at a time (from a watch)")
		// Nothing may start again once all succeeded.
		Consistently(func() int32 { return upgraderCalls(rollout) }).WithTimeout(time.Second).Should(BeEquivalentTo(6))
		for _, a := range rollout {
			Expect(a.upgrades.Load()).To(BeEquivalentTo(1), "%s ran its upgrade command once", a.name)
		}
		states, attempts, peak, lists := record.result()
		AddReportEntry("Upgrade record", fmt.Sprintf("%d lists (while no watch ran), peak %d in flight", lists, peak))
		Expect(attempts).To(BeEquivalentTo(1), "no device was ever authorized a second time")
		for _, a := range rollout {
			Expect(states[a.name]).To(Equal([]itmv1.UpgradeState{"", itmv1.UpgradeStateAuthorized, itmv1.UpgradeStateInProgress, itmv1.UpgradeStateSucceeded}), a.name)
		}
		Expect(peak).To(Equal(2), "maxUnavailable 2 was used and never exceeded")

		By("the window's status matches the world")
		st := windowStatus(mw.Name)()
		Expect(st.Devices).To(Equal(itmv1.UpgradeCounts{Succeeded: 6}))
		Expect(st.WindowOpen).To(BeTrue())
		Expect(st.BlockedBy).To(BeEmpty())
		cur := &itmv1.MaintenanceWindow{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mw), cur)).To(Succeed())
		Expect(st.ObservedGeneration).To(Equal(cur.Generation))
		Expect(conditionIn(st.Conditions, itmv1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(conditionIn(st.Conditions, itmv1.MaintenanceConditionProgressing)).To(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", itmv1.ReasonRolloutComplete)))
		Expect(conditionIn(st.Conditions, itmv1.MaintenanceConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))

		By("every Device's status matches the world")
		for _, a := range rollout {
			u := upgradeOf(a.name)
			Expect(u).To(And(HaveField("State", itmv1.UpgradeStateSucceeded), HaveField("Window", mw.Name),
				HaveField("TargetVersion", "2.0"), HaveField("Attempts", BeEquivalentTo(1))), a.name)
			Expect(osVersionOf(a.name)).To(Equal("2.0"))
			Eventually(conditionOf(a.name, itmv1.DeviceConditionUpToDate)).Should(Equal(metav1.ConditionTrue))
		}
		for _, a := range bystanders {
			Expect(getDevice(a.name).Status.Upgrade).To(BeNil(), "no window selects %s", a.name)
		}
		for _, a := range fleet {
			d := getDevice(a.name)
			Expect(meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)).To(BeTrue(), a.name)
			Expect(meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.ConditionReady)).To(BeTrue(), a.name)
			Expect(leaseOf(a.name).Spec.RenewTime.Time).To(BeTemporally(">", back), a.name)
		}

		By("the onboarding's status matches the world: one account in each provider")
		got := request(r.Name)
		Expect(got.Status.Accounts).To(ConsistOf(
			itmv1.AccountStatus{Provider: kube.Name, ID: r.Name, State: itmv1.AccountStateProvisioned},
			itmv1.AccountStatus{Provider: ld.Name, ID: "uid=" + r.Name + "," + ldapServer.PeopleDN, State: itmv1.AccountStateProvisioned},
		))
		Expect(got.Status.CredentialsSecret).To(Equal(&itmv1.ObjectReference{Namespace: kube.Spec.Kubernetes.Namespace, Name: r.Name + "-kubeconfig"}))
		for _, c := range []string{itmv1.ConditionReady, itmv1.OnboardingConditionAccountsReady} {
			Expect(meta.IsStatusConditionTrue(got.Status.Conditions, c)).To(BeTrue(), c)
		}
		var sas corev1.ServiceAccountList
		Expect(k8s.List(ctx, &sas, client.InNamespace(kube.Spec.Kubernetes.Namespace), client.MatchingLabels{accounts.LabelUser: r.Name})).To(Succeed())
		Expect(sas.Items).To(HaveLen(1))
		var secrets corev1.SecretList
		Expect(k8s.List(ctx, &secrets, client.InNamespace(kube.Spec.Kubernetes.Namespace), client.MatchingLabels{accounts.LabelUser: r.Name})).To(Succeed())
		Expect(secrets.Items).To(HaveLen(1))
		Expect(whoAmI(secrets.Items[0].Data["kubeconfig"])).To(Equal("system:serviceaccount:" + kube.Spec.Kubernetes.Namespace + ":" + r.Name))
		Expect(ldapEntries(r.Name)).To(HaveLen(1))
	})
})

// convergence records, from a poll every 100 ms, when the API server first
// answered /readyz after a restart and when each part converged after
// that: a device once the manager's own cache holds a check-in from after
// the restart and its CheckedIn is True (a True from before the outage
// proves nothing), the rollout once every device succeeded, the onboarding
// once Active.
type convergence struct {
	mu    sync.Mutex
	start time.Time
	ready time.Time
	at    map[string]time.Time
	parts []string
}

func watchConvergence(fleet []*restartAgent, window string, upgrades int32, request string) *convergence {
	GinkgoHelper()
	cs, err := kubernetes.NewForConfig(env.Config)
	Expect(err).NotTo(HaveOccurred())
	conv := &convergence{start: time.Now(), at: map[string]time.Time{}}
	checks := map[string]func(ready time.Time) bool{
		"rollout": func(time.Time) bool {
			return windowStatus(window)().Devices == itmv1.UpgradeCounts{Succeeded: upgrades}
		},
		"onboarding": func(time.Time) bool { return phaseOf(request)() == itmv1.OnboardingPhaseActive },
	}
	for _, a := range fleet {
		checks["check-in "+a.name] = func(ready time.Time) bool {
			lease := &coordinationv1.Lease{}
			if err := managerCache.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: a.name}, lease); err != nil ||
				lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.After(ready) {
				return false
			}
			return conditionOf(a.name, itmv1.DeviceConditionCheckedIn)() == metav1.ConditionTrue
		}
	}
	for name := range checks {
		conv.parts = append(conv.parts, name)
	}
	sort.Strings(conv.parts)
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	DeferCleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		for c.Err() == nil && len(conv.pending()) > 0 {
			conv.mu.Lock()
			ready := conv.ready
			conv.mu.Unlock()
			if ready.IsZero() {
				rc, rcancel := context.WithTimeout(c, 500*time.Millisecond)
				body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rc)
				rcancel()
				if err == nil && string(body) == "ok" {
					conv.mu.Lock()
					conv.ready = time.Now()
					conv.mu.Unlock()
				}
			} else {
				for _, name := range conv.pending() {
					if checks[name](ready) {
						conv.mu.Lock()
						conv.at[name] = time.Now()
						conv.mu.Unlock()
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return conv
}

// pending are the parts not converged yet.
func (c *convergence) pending() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, name := range c.parts {
		if _, ok := c.at[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

func (c *convergence) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var checkIns time.Duration
	for name, t := range c.at {
		if strings.HasPrefix(name, "check-in ") {
			checkIns = max(checkIns, t.Sub(c.ready))
		}
	}
	return fmt.Sprintf("/readyz %s after the start began; then every device CheckedIn on a fresh check-in after %s, rollout finished after %s, onboarding Active after %s",
		c.ready.Sub(c.start).Round(time.Millisecond), checkIns.Round(time.Millisecond),
		c.at["rollout"].Sub(c.ready).Round(time.Millisecond), c.at["onboarding"].Sub(c.ready).Round(time.Millisecond))
}

// upgradeGate numbers the upgrades of a rollout: the third and fourth
// hold until outage is closed.
type upgradeGate struct {
	started, held atomic.Int32
	outage        chan struct{}
}

// restartAgent is a real agent (internal/agent, as cmd/itmanager-agent runs
// it) checking in over HTTPS with its enrolment, whose upgrade command
// rewrites the os-release its facts come from.
type restartAgent struct {
	name     string
	root     string
	upgrades atomic.Int32
	gate     *upgradeGate
}

func startRestartAgent(i int, labels map[string]string, gate *upgradeGate) *restartAgent {
	GinkgoHelper()
	d := agentDevice(func(d *itmv1.Device) {
		d.Labels = labels
		d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
	})
	a := &restartAgent{name: d.Name, root: GinkgoT().TempDir(), gate: gate}
	tokenOf(d.Name)
	dir := GinkgoT().TempDir()
	for k, v := range enrolment(d.Name) {
		if k == checkin.SecretKeyURL && i%2 == 1 {
			// Every other agent talks to the second replica.
			v = []byte(strings.Replace(string(v), checkinURL, checkinURL2, 1))
		}
		Expect(os.WriteFile(filepath.Join(dir, k), v, 0o600)).To(Succeed())
	}
	Expect(os.MkdirAll(filepath.Join(a.root, "etc"), 0o755)).To(Succeed())
	Expect(a.writeVersion("1.0")).To(Succeed())
	addr := netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)})
	ag := &agent.Agent{
		EnrolmentDir: dir, StateFile: filepath.Join(dir, "seq"), Version: "v-restart",
		System: agent.System{Root: a.root,
			Hostname:   func() (string, error) { return a.name, nil },
			Interfaces: func() ([]netip.Addr, error) { return []netip.Addr{addr}, nil }},
		Upgrader: a, Interval: time.Second, MaxBackoff: time.Second,
		Log: slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelWarn})).With("device", a.name),
	}
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		_ = ag.Run(c)
	}()
	DeferCleanup(func() {
		cancel()
		<-done
	})
	return a
}

func (a *restartAgent) writeVersion(v string) error {
	return os.WriteFile(filepath.Join(a.root, "etc", "os-release"), []byte(fmt.Sprintf("ID=test\nVERSION_ID=%q\n", v)), 0o644)
}

// Upgrade is the device's upgrade command, as a package manager: it
// installs the target.
func (a *restartAgent) Upgrade(ctx context.Context, target string) error {
	a.upgrades.Add(1)
	if n := a.gate.started.Add(1); n == 3 || n == 4 {
		a.gate.held.Add(1)
		select {
		case <-a.gate.outage:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return a.writeVersion(target)
}

func upgraderCalls(agents []*restartAgent) int32 {
	var n int32
	for _, a := range agents {
		n += a.upgrades.Load()
	}
	return n
}

func osVersionOf(name string) string {
	d := &itmv1.Device{}
	if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil || d.Status.Observed == nil {
		return ""
	}
	return d.Status.Observed.OSVersion
}

func conditionIn(conds []metav1.Condition, t string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// holdAfterEnsure holds the onboarding controller right after the
// Kubernetes provider made user's account, until release: the account
// exists, nothing about it is recorded yet.
type holdAfterEnsure struct {
	inner   controllers.ProviderOpener
	user    string
	held    chan struct{}
	release <-chan struct{}
	once    sync.Once
}

func (h *holdAfterEnsure) Open(ctx context.Context, p *itmv1.AccountProvider) (accounts.Provider, error) {
	prov, err := h.inner.Open(ctx, p)
	if err != nil || p.Spec.Type != itmv1.AccountProviderKubernetes {
		return prov, err
	}
	return &heldProvider{Provider: prov, h: h}, nil
}

type heldProvider struct {
	accounts.Provider
	h *holdAfterEnsure
}

func (p *heldProvider) Ensure(ctx context.Context, a accounts.Account) (accounts.Result, error) {
	res, err := p.Provider.Ensure(ctx, a)
	if err != nil || a.User != p.h.user {
		return res, err
	}
	p.h.once.Do(func() { close(p.h.held) })
	select {
	case <-p.h.release:
	case <-ctx.Done():
		return accounts.Result{}, ctx.Err()
	}
	return res, err
}

// upgradeRecord is every upgrade state the Devices of a selector went
// through, the highest attempt count any of them showed, and the most in
// flight at once, from a watch. A restarted API server serves no watch
// until its watch cache is initialized (429, for seconds) and then answers
// one from before its start with 410 Gone, while lists (read from etcd)
// work from its first moment; so whenever the watch is not running the
// record lists every 100 ms or so. That sees every state: each step of an
// agent's upgrade takes a check-in of its own, and the check-in service
// accepts a device's check-ins at least checkinMinInterval (300 ms) apart.
type upgradeRecord struct {
	mu       sync.Mutex
	states   map[string][]itmv1.UpgradeState
	inFlight map[string]bool
	attempts int32
	peak     int
	lists    int
}

func recordUpgrades(labels map[string]string) *upgradeRecord {
	GinkgoHelper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	rec := &upgradeRecord{states: map[string][]itmv1.UpgradeState{}, inFlight: map[string]bool{}}
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	DeferCleanup(func() {
		cancel()
		<-done
	})
	listed := make(chan struct{})
	var listedOnce sync.Once
	go func() {
		defer close(done)
		rv := ""
		for c.Err() == nil {
			if rv == "" {
				list := &itmv1.DeviceList{}
				lc, lcancel := context.WithTimeout(c, time.Second)
				err := wc.List(lc, list, client.MatchingLabels(labels))
				lcancel()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				rec.mu.Lock()
				rec.lists++
				for i := range list.Items {
					rec.observe(&list.Items[i])
				}
				rec.count()
				rec.mu.Unlock()
				rv = list.ResourceVersion
				listedOnce.Do(func() { close(listed) })
			}
			// A watch not established within 100 ms (the client waits out
			// 429s itself) gives way to the next list.
			wctx, wcancel := context.WithCancel(c)
			timer := time.AfterFunc(100*time.Millisecond, wcancel)
			w, err := wc.Watch(wctx, &itmv1.DeviceList{}, client.MatchingLabels(labels),
				&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}})
			if err != nil || !timer.Stop() {
				if w != nil {
					w.Stop()
				}
				wcancel()
				rv = ""
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					break
				}
				d, ok := ev.Object.(*itmv1.Device)
				if !ok {
					continue
				}
				if ev.Type == watch.Added || ev.Type == watch.Modified {
					rec.mu.Lock()
					rec.observe(d)
					rec.count()
					rec.mu.Unlock()
				}
			}
			// However it ended (the server went away, 410, a timeout),
			// list again rather than trust a resourceVersion.
			w.Stop()
			wcancel()
			rv = ""
		}
	}()
	Eventually(listed).Should(BeClosed())
	return rec
}

func (r *upgradeRecord) observe(d *itmv1.Device) {
	state := itmv1.UpgradeState("")
	if u := d.Status.Upgrade; u != nil {
		state = u.State
		r.attempts = max(r.attempts, u.Attempts)
	}
	if s := r.states[d.Name]; len(s) == 0 || s[len(s)-1] != state {
		r.states[d.Name] = append(s, state)
	}
	r.inFlight[d.Name] = state == itmv1.UpgradeStateAuthorized || state == itmv1.UpgradeStateInProgress
}

// count takes the number in flight once the record holds a consistent
// view (after an event, or after a whole list).
func (r *upgradeRecord) count() {
	n := 0
	for _, f := range r.inFlight {
		if f {
			n++
		}
	}
	r.peak = max(r.peak, n)
}

func (r *upgradeRecord) result() (states map[string][]itmv1.UpgradeState, attempts int32, peak, lists int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	states = make(map[string][]itmv1.UpgradeState, len(r.states))
	for k, v := range r.states {
		states[k] = append([]itmv1.UpgradeState(nil), v...)
	}
	return states, r.attempts, r.peak, r.lists
}
