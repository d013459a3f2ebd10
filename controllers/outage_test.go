package controllers_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/agent"
)

// seen is one version of an object as a watch delivered it: when it
// arrived and what it said.
type seen struct {
	at    time.Time
	state string
}

// history records, from a watch, every version of one object, so that a
// "never" claim is checked against every transition rather than samples.
type history struct {
	mu     sync.Mutex
	events []seen
	// ended is set when the watch stopped before the spec did: the
	// record is then incomplete.
	ended bool
}

// watchHistory watches the object name (in ns, "" for cluster-scoped) of
// list's kind until the spec ends, recording summary of each version
// ("absent" once deleted).
func watchHistory(list client.ObjectList, ns, name string, summary func(client.Object) string) *history {
	GinkgoHelper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	wctx, stop := context.WithCancel(ctx)
	opts := []client.ListOption{client.MatchingFields{"metadata.name": name}}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	w, err := wc.Watch(wctx, list, opts...)
	Expect(err).NotTo(HaveOccurred())
	h := &history{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			state := ""
			switch ev.Type {
			case watch.Added, watch.Modified:
				state = summary(ev.Object.(client.Object))
			case watch.Deleted:
				state = "absent"
			default:
				continue
			}
			h.mu.Lock()
			h.events = append(h.events, seen{at: time.Now(), state: state})
			h.mu.Unlock()
		}
		h.mu.Lock()
		h.ended = wctx.Err() == nil
		h.mu.Unlock()
	}()
	DeferCleanup(func() {
		stop()
		w.Stop()
		<-done
	})
	return h
}

// record returns what the watch delivered so far; it fails the spec when
// the watch ended early.
func (h *history) record() []seen {
	GinkgoHelper()
	h.mu.Lock()
	defer h.mu.Unlock()
	Expect(h.ended).To(BeFalse(), "the watch ended early: the record is incomplete")
	return slices.Clone(h.events)
}

// String lists the record, for failure messages.
func (h *history) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, e := range h.events {
		fmt.Fprintf(&b, "%s %s\n", e.at.Format("15:04:05.000"), e.state)
	}
	return b.String()
}

// readyState summarizes an AccountProvider's Ready condition.
func readyState(o client.Object) string {
	c := meta.FindStatusCondition(o.(*itmv1.AccountProvider).Status.Conditions, "Ready")
	if c == nil {
		return "unset"
	}
	return string(c.Status) + "/" + c.Reason
}

// ingressState summarizes a NetworkPolicy as ingressCIDRs does.
func ingressState(o client.Object) string {
	np := o.(*networkingv1.NetworkPolicy)
	if len(np.Spec.Ingress) == 0 {
		return "isolated"
	}
	var out []string
	for _, r := range np.Spec.Ingress {
		for _, f := range r.From {
			out = append(out, f.IPBlock.CIDR)
		}
	}
	return strings.Join(out, ",")
}

// ldapEntries are the entries with uid user under the people OU, read
// directly from slapd.
func ldapEntries(user string) []*ldap.Entry {
	GinkgoHelper()
	c, err := ldapServer.Admin()
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest(ldapServer.PeopleDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 10, false,
		"(uid="+ldap.EscapeFilter(user)+")", []string{"uid", "description", "pwdAccountLockedTime"}, nil))
	Expect(err).NotTo(HaveOccurred())
	return res.Entries
}

// conditionText is "Reason: message" of a request's condition, "" when unset.
func conditionText(name, condType string) func() string {
	return func() string {
		c := meta.FindStatusCondition(request(name).Status.Conditions, condType)
		if c == nil {
			return ""
		}
		return c.Reason + ": " + c.Message
	}
}

// figure logs a measured duration for the report (never asserted).
func figure(name string, d time.Duration) {
	AddReportEntry(name, d.Round(time.Millisecond).String())
	fmt.Fprintf(GinkgoWriter, "FIGURE %s: %s (noisy when the CPU is shared)\n", name, d.Round(time.Millisecond))
}

var _ = Describe("Outages", func() {
	It("LDAP outage: the provider is Ready=False/Unreachable while slapd is stopped, an offboarding due at endDate starts on time "+
		"and an onboarding runs, both blocking at the directory saying why, and both finish by themselves once slapd is back, "+
		"with one LDAP entry and one ServiceAccount each", func() {
		kube := kubeProvider()
		ld := ldapProvider(nil) // offboardAction Disable: the entry stays, locked
		Eventually(providerReady(ld.Name)).Should(Equal(metav1.ConditionTrue))
		usersNS := kube.Spec.Kubernetes.Namespace
		both := []string{kube.Name, ld.Name}

		leaver := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = both
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, leaver)).To(Succeed())
		Eventually(phaseOf(leaver.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
		leaverDN := "uid=" + leaver.Name + "," + ldapServer.PeopleDN
		Expect(ldapEntries(leaver.Name)).To(HaveLen(1))

		providerSeen := watchHistory(&itmv1.AccountProviderList{}, "", ld.Name, readyState)
		leaverSeen := watchHistory(&itmv1.OnboardingRequestList{}, "", leaver.Name, func(o client.Object) string {
			return string(o.(*itmv1.OnboardingRequest).Status.Phase)
		})

		By("slapd stops: the provider's next check reports it Unreachable")
		Expect(ldapServer.Halt()).To(Succeed())
		DeferCleanup(func() {
			if !ldapServer.Running() { // the spec failed mid-outage: later specs need slapd
				Expect(ldapServer.Restart()).To(Succeed())
			}
		})
		Eventually(func() string {
			p := &itmv1.AccountProvider{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: ld.Name}, p)).To(Succeed())
			c := meta.FindStatusCondition(p.Status.Conditions, "Ready")
			return string(c.Status) + "/" + c.Reason + ": " + c.Message
		}).WithTimeout(15 * time.Second).Should(And(
			HavePrefix("False/"+itmv1.AccountProviderReasonUnreachable+": connect to "+ldapServer.URL),
			ContainSubstring("connection refused")))

		By("the leaver, still Active, keeps access while the directory is down, and Ready says why")
		Eventually(conditionText(leaver.Name, "Ready")).Should(And(
			HavePrefix("Degraded: AccountProvider "+ld.Name+": connect to "+ldapServer.URL), ContainSubstring("connection refused")))
		Expect(phaseOf(leaver.Name)()).To(Equal(itmv1.OnboardingPhaseActive))
		// Eleven failed passes in a row: the next retry is backed off by
		// more than 5 s, so an endDate passing now must not wait for it.
		Eventually(func() float64 {
			return gauge("itmanager_onboarding_provisioning_errors_total", map[string]string{"provider": ld.Name})
		}).WithTimeout(20 * time.Second).Should(BeNumerically(">=", 11))

		By("the leaver's endDate passes during the outage: offboarding starts when it does, blocks at the directory and keeps the record")
		endDate := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
		Expect(updateAs(k8s, leaver.Name, func(r *itmv1.OnboardingRequest) {
			r.Spec.EndDate = &metav1.Time{Time: endDate}
		})).To(Succeed())
		Eventually(phaseOf(leaver.Name)).WithTimeout(time.Until(endDate)+5*time.Second).Should(Equal(itmv1.OnboardingPhaseOffboarding),
			"offboarding starts at endDate, not a backoff later")
		figure("endDate → Offboarding while LDAP is down", time.Since(endDate))
		Eventually(conditionText(leaver.Name, itmv1.OnboardingConditionAccountsReady)).Should(And(
			HavePrefix("OffboardingBlocked: AccountProvider "+ld.Name+": connect to "+ldapServer.URL), ContainSubstring("connection refused")))
		Eventually(accountOf(leaver.Name, kube.Name)).Should(HaveField("State", itmv1.AccountStateDeleted), "what can be undone is")
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: usersNS, Name: leaver.Name + "-kubeconfig"}, &corev1.Secret{}))).
			To(BeTrue(), "the credentials are revoked at endDate")
		Expect(accountOf(leaver.Name, ld.Name)()).To(And(
			HaveField("ID", leaverDN), HaveField("State", itmv1.AccountStateProvisioned)), "the record of what must still be undone is kept")

		By("a joiner during the outage: the Kubernetes account is made, the LDAP one waits, and the request says why")
		newcomer := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = both
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, newcomer)).To(Succeed())
		Eventually(conditionText(newcomer.Name, itmv1.OnboardingConditionAccountsReady)).Should(And(
			HavePrefix("ProvisioningFailed: AccountProvider "+ld.Name+": connect to "+ldapServer.URL), ContainSubstring("connection refused")))
		Expect(phaseOf(newcomer.Name)()).To(Equal(itmv1.OnboardingPhaseProvisioning))
		Eventually(accountOf(newcomer.Name, kube.Name)).Should(HaveField("State", itmv1.AccountStateProvisioned))
		credentials := &corev1.Secret{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: usersNS, Name: newcomer.Name + "-kubeconfig"}, credentials)).To(Succeed())

		By("slapd starts again on the same port with its data; nobody touches the requests")
		Expect(ldapServer.Restart()).To(Succeed())
		back := time.Now()
		Eventually(providerReady(ld.Name)).WithTimeout(15 * time.Second).Should(Equal(metav1.ConditionTrue))
		figure("LDAP back → provider Ready", time.Since(back))
		Eventually(phaseOf(leaver.Name)).WithTimeout(20 * time.Second).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		figure("LDAP back → offboarding finished", time.Since(back))
		Eventually(phaseOf(newcomer.Name)).WithTimeout(20 * time.Second).Should(Equal(itmv1.OnboardingPhaseActive))
		figure("LDAP back → joiner Active", time.Since(back))

		By("every transition, from watches: Ready never True and the leaver never Offboarded while slapd was down")
		var downSeen bool
		for _, e := range providerSeen.record() {
			downSeen = downSeen || e.state == "False/"+itmv1.AccountProviderReasonUnreachable
			if downSeen && e.at.Before(back) {
				Expect(e.state).NotTo(HavePrefix("True/"), "Ready while slapd was down:\n%s", providerSeen)
			}
		}
		Expect(downSeen).To(BeTrue(), providerSeen.String())
		for _, e := range leaverSeen.record() {
			if e.state == string(itmv1.OnboardingPhaseOffboarded) {
				Expect(e.at).To(BeTemporally(">", back), "Offboarded while slapd was down:\n%s", leaverSeen)
			}
		}

		By("the leaver: one entry, locked, and no ServiceAccount; the status tells the truth")
		got := request(leaver.Name)
		Expect(got.Status.Accounts).To(ConsistOf(
			itmv1.AccountStatus{Provider: kube.Name, ID: leaver.Name, State: itmv1.AccountStateDeleted},
			itmv1.AccountStatus{Provider: ld.Name, ID: leaverDN, State: itmv1.AccountStateDisabled},
		))
		Expect(meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionAccountsReady).Reason).To(Equal("Offboarded"))
		entries := ldapEntries(leaver.Name)
		Expect(entries).To(HaveLen(1))
		Expect(entries[0].DN).To(Equal(leaverDN))
		Expect(entries[0].GetAttributeValue("pwdAccountLockedTime")).NotTo(BeEmpty())
		var sas corev1.ServiceAccountList
		Expect(k8s.List(ctx, &sas, client.InNamespace(usersNS), client.MatchingLabels{accounts.LabelUser: leaver.Name})).To(Succeed())
		Expect(sas.Items).To(BeEmpty())

		By("the joiner: exactly one LDAP entry and one ServiceAccount, its credentials minted once")
		got = request(newcomer.Name)
		newcomerDN := "uid=" + newcomer.Name + "," + ldapServer.PeopleDN
		Expect(got.Status.Accounts).To(ConsistOf(
			itmv1.AccountStatus{Provider: kube.Name, ID: newcomer.Name, State: itmv1.AccountStateProvisioned},
			itmv1.AccountStatus{Provider: ld.Name, ID: newcomerDN, State: itmv1.AccountStateProvisioned},
		))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Ready")).To(BeTrue())
		entries = ldapEntries(newcomer.Name)
		Expect(entries).To(HaveLen(1))
		Expect(entries[0].DN).To(Equal(newcomerDN))
		Expect(entries[0].GetAttributeValue("description")).To(Equal(accounts.OwnerMarkPrefix + string(got.UID)))
		Expect(entries[0].GetAttributeValue("pwdAccountLockedTime")).To(BeEmpty())
		Expect(k8s.List(ctx, &sas, client.InNamespace(usersNS), client.MatchingLabels{accounts.LabelUser: newcomer.Name})).To(Succeed())
		Expect(sas.Items).To(HaveLen(1))
		var secrets corev1.SecretList
		Expect(k8s.List(ctx, &secrets, client.InNamespace(usersNS), client.MatchingLabels{accounts.LabelUser: newcomer.Name})).To(Succeed())
		Expect(secrets.Items).To(HaveLen(1))
		Expect(secrets.Items[0].UID).To(Equal(credentials.UID))
		Expect(secrets.Items[0].Annotations[accounts.AnnotationTokenExpires]).To(Equal(credentials.Annotations[accounts.AnnotationTokenExpires]),
			"the token minted during the outage is the one kept")
	})

	It("LDAP outage under a 10-minute provider check interval: an unreachable provider is checked again sooner, "+
		"so it is Ready again within seconds of slapd's return, not an interval later", func() {
		ld := ldapProvider(nil)
		Eventually(providerReady(ld.Name)).Should(Equal(metav1.ConditionTrue))

		By("slapd stops; an onboarding manager that checks providers every 10 minutes starts and finds it unreachable")
		Expect(ldapServer.Halt()).To(Succeed())
		DeferCleanup(func() {
			if !ldapServer.Running() {
				Expect(ldapServer.Restart()).To(Succeed())
			}
		})
		stopOnboarding()
		providerCheckEvery = 10 * time.Minute
		stopOnboarding = startOnboarding(nil)
		DeferCleanup(func() {
			stopOnboarding()
			providerCheckEvery = 5 * time.Second
			stopOnboarding = startOnboarding(nil)
		})
		Eventually(providerReady(ld.Name)).WithTimeout(15 * time.Second).Should(Equal(metav1.ConditionFalse))

		By("slapd returns: the provider is Ready again with nobody touching it")
		Expect(ldapServer.Restart()).To(Succeed())
		back := time.Now()
		Eventually(providerReady(ld.Name)).WithTimeout(15 * time.Second).Should(Equal(metav1.ConditionTrue))
		figure("LDAP back → provider Ready (10m interval)", time.Since(back))
	})

	It("check-in service down longer than maxCheckInAge: a compliant device is withdrawn from the NetworkPolicy while both replicas "+
		"are stopped, and is back within seconds of the service returning and the agent checking in, with no manual step", func() {
		const maxAge = 4 * time.Second
		const address = "10.87.0.9"
		label := map[string]string{"fleet": uniqueName("outage")}
		dev := agentDevice(func(d *itmv1.Device) { d.Labels = label })
		tokenOf(dev.Name)
		ns := newNamespace(nil)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Posture = &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: maxAge}, RequireUpToDate: true,
				RequireDiskEncryption: true, MinOSVersions: map[itmv1.OSFamily]string{itmv1.OSFamilyLinux: "24.04"}}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		})
		name := "itm-" + p.Name
		npSeen := watchHistory(&networkingv1.NetworkPolicyList{}, ns, name, ingressState)

		By("the real agent checks in every second from an encrypted Ubuntu 24.04 laptop")
		dir := GinkgoT().TempDir()
		for k, v := range enrolment(dev.Name) {
			Expect(os.WriteFile(filepath.Join(dir, k), v, 0o600)).To(Succeed())
		}
		root := laptopRoot()
		agentLog := gbytes.NewBuffer()
		a := &agent.Agent{
			EnrolmentDir: dir, StateFile: filepath.Join(dir, "state", "seq"), Version: "v0.1.0-outage",
			System: agent.System{Root: root, Hostname: func() (string, error) { return "outage-laptop", nil },
				Interfaces: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr(address)}, nil }},
			Log:      slog.New(slog.NewTextHandler(io.MultiWriter(GinkgoWriter, agentLog), &slog.HandlerOptions{Level: slog.LevelDebug})),
			Interval: time.Second, MaxBackoff: time.Second,
		}
		actx, stopAgent := context.WithCancel(ctx)
		agentDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(agentDone)
			Expect(a.Run(actx)).To(Succeed())
		}()
		DeferCleanup(func() { stopAgent(); <-agentDone })
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{address + "/32"}))
		Eventually(policyStatus(p.Name)).Should(HaveField("Devices", itmv1.DeviceCounts{Matched: 1, Allowed: 1, Denied: 0}))

		By("both check-in replicas stop: the agent's check-ins fail, and access is withdrawn once the last one is too old")
		for _, r := range checkinReplicas {
			r.Stop()
		}
		stopped := time.Now()
		DeferCleanup(func() {
			for _, r := range checkinReplicas {
				if r.stop == nil { // the spec failed mid-outage: later specs need the service
					r.Start()
				}
			}
		})
		Eventually(ingressCIDRs(ns, name)).WithTimeout(maxAge + 10*time.Second).WithPolling(50 * time.Millisecond).
			Should(Equal([]string{"isolated"}))
		withdrawn := time.Now()
		figure("check-in service stopped → access withdrawn", withdrawn.Sub(stopped))
		renewed := leaseOf(dev.Name).Spec.RenewTime.Time
		Expect(renewed).To(BeTemporally("<", stopped), "no check-in got through the stopped service")
		Expect(withdrawn).To(BeTemporally(">=", renewed.Add(maxAge)), "withdrawn before the check-in was too old")
		Eventually(func() []itmv1.DeniedDevice { return policyStatus(p.Name)().Denied }).Should(ContainElement(itmv1.DeniedDevice{
			Device: dev.Name, Reasons: []string{"last check-in " + renewed.UTC().Format(time.RFC3339) + " is older than 4s"},
		}))
		Eventually(agentLog).Should(gbytes.Say("Check-in failed"))
		Expect(ingressCIDRs(ns, name)()).To(Equal([]string{"isolated"}), "still withdrawn while the service is down")

		By("the replicas start again: the agent's next check-in brings the address back, nobody else acts")
		back := time.Now()
		for _, r := range checkinReplicas {
			r.Start()
		}
		Eventually(ingressCIDRs(ns, name)).WithTimeout(15 * time.Second).WithPolling(50 * time.Millisecond).
			Should(Equal([]string{address + "/32"}))
		restored := time.Now()
		Eventually(agentLog).Should(gbytes.Say("Check-in succeeded again"))
		checkedIn := leaseOf(dev.Name).Spec.RenewTime.Time
		Expect(checkedIn).To(BeTemporally(">", back), "a check-in after the service returned")
		figure("check-in service back → agent checked in (Lease renewed)", checkedIn.Sub(back))
		figure("check-in service back → NetworkPolicy restored", restored.Sub(back))
		Eventually(policyStatus(p.Name)).Should(HaveField("Devices", itmv1.DeviceCounts{Matched: 1, Allowed: 1, Denied: 0}))

		By("every NetworkPolicy version, from a watch: the address never came back while the service was down")
		events := npSeen.record()
		var isolatedAt time.Time
		for _, e := range events {
			if e.state == "isolated" && isolatedAt.IsZero() && e.at.After(stopped) {
				isolatedAt = e.at
			}
			if !isolatedAt.IsZero() && strings.Contains(e.state, address) {
				Expect(e.at).To(BeTemporally(">", back), "the address came back while the service was down:\n%s", npSeen)
			}
		}
		Expect(isolatedAt).NotTo(BeZero(), npSeen.String())
	})
})

// laptopRoot is a system tree for the agent: Ubuntu 24.04 whose root
// filesystem sits on LUKS (dm-crypt), as facts.go reads them.
func laptopRoot() string {
	GinkgoHelper()
	root := GinkgoT().TempDir()
	files := map[string]string{
		"etc/os-release":               "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n",
		"proc/self/mountinfo":          "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw\n",
		"sys/class/block/dm-0/dm/uuid": "CRYPT-LUKS2-0123456789abcdef-root\n",
	}
	for p, content := range files {
		Expect(os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(root, p), []byte(content), 0o644)).To(Succeed())
	}
	Expect(os.MkdirAll(filepath.Join(root, "sys/dev/block"), 0o755)).To(Succeed())
	Expect(os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(root, "sys/dev/block/253:0"))).To(Succeed())
	return root
}
