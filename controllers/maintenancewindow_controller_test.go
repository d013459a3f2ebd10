package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

// fakeAgent checks in every 300 ms like a real agent and follows upgrade
// authorizations: InProgress at once, then Succeeded (reporting the target
// as its version) or Failed when released.
type fakeAgent struct {
	name, token string
	seq         uint64
	mu          sync.Mutex
	version     string
	// release lets an upgrade in progress finish; fail makes it fail.
	release, fail atomic.Bool
	stop          context.CancelFunc
}

func startAgent(name, version string) *fakeAgent {
	GinkgoHelper()
	a := &fakeAgent{name: name, token: tokenOf(name), version: version}
	c, cancel := context.WithCancel(ctx)
	a.stop = cancel
	done := make(chan struct{})
	// Waits for the agent to end, so that no check-in of it is still on
	// its way when the next spec (or the suite's end) begins.
	DeferCleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		var report *checkin.UpgradeReport
		for c.Err() == nil {
			a.mu.Lock()
			a.seq++
			req := checkin.Request{Sequence: a.seq, Facts: checkin.Facts{OSVersion: a.version, AgentVersion: "fake"}, Upgrade: report}
			a.mu.Unlock()
			res := post(a.name, a.token, req)
			report = nil
			if res.code == 200 {
				if up, ok := res.body["upgrade"].(map[string]any); ok {
					target, _ := up["targetVersion"].(string)
					switch wire.UpgradeState(up["state"].(string)) {
					case wire.UpgradeStateAuthorized:
						report = &checkin.UpgradeReport{State: wire.UpgradeStateInProgress, TargetVersion: target}
					case wire.UpgradeStateInProgress:
						if a.fail.Load() {
							report = &checkin.UpgradeReport{State: wire.UpgradeStateFailed, TargetVersion: target, Message: "disk full"}
						} else if a.release.Load() {
							a.mu.Lock()
							a.version = target
							a.mu.Unlock()
							report = &checkin.UpgradeReport{State: wire.UpgradeStateSucceeded, TargetVersion: target}
						}
					}
				}
			}
			select {
			case <-c.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return a
}

func agentFleet(n int, label map[string]string) ([]*itmv1.Device, []*fakeAgent) {
	GinkgoHelper()
	var devs []*itmv1.Device
	var agents []*fakeAgent
	for range n {
		d := agentDevice(func(d *itmv1.Device) {
			d.Labels = label
			d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
		})
		devs = append(devs, d)
		agents = append(agents, startAgent(d.Name, "1.0"))
	}
	for _, d := range devs {
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
	}
	// In name order, the order a rollout takes them in.
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return devs[idx[a]].Name < devs[idx[b]].Name })
	sortedDevs, sortedAgents := make([]*itmv1.Device, n), make([]*fakeAgent, n)
	for i, j := range idx {
		sortedDevs[i], sortedAgents[i] = devs[j], agents[j]
	}
	return sortedDevs, sortedAgents
}

func window(label map[string]string, mutate func(*itmv1.MaintenanceWindow)) *itmv1.MaintenanceWindow {
	GinkgoHelper()
	mw := &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("mw")},
		Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: label},
			// Always open: a window starts every minute and lasts an hour.
			Windows: []itmv1.Window{{Schedule: "* * * * *", Duration: metav1.Duration{Duration: time.Hour}}},
		},
	}
	if mutate != nil {
		mutate(mw)
	}
	Expect(k8s.Create(ctx, mw)).To(Succeed())
	return mw
}

func windowStatus(name string) func() itmv1.MaintenanceWindowStatus {
	return func() itmv1.MaintenanceWindowStatus {
		mw := &itmv1.MaintenanceWindow{}
		_ = k8s.Get(ctx, types.NamespacedName{Name: name}, mw)
		return mw.Status
	}
}

// upgradeOf reads a device's upgrade status without asserting, so the
// concurrency sampler can call it from its own goroutine.
func upgradeOf(name string) itmv1.UpgradeStatus {
	d := &itmv1.Device{}
	if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil || d.Status.Upgrade == nil {
		return itmv1.UpgradeStatus{}
	}
	return *d.Status.Upgrade
}

// inFlight counts the devices whose upgrade is Authorized or InProgress.
func inFlight(devs []*itmv1.Device) int {
	n := 0
	for _, d := range devs {
		if s := upgradeOf(d.Name).State; s == itmv1.UpgradeStateAuthorized || s == itmv1.UpgradeStateInProgress {
			n++
		}
	}
	return n
}

// watchConcurrency samples the in-flight count until the spec ends and
// returns the highest seen.
func watchConcurrency(devs []*itmv1.Device) *atomic.Int32 {
	var peak atomic.Int32
	c, cancel := context.WithCancel(ctx)
	DeferCleanup(cancel)
	go func() {
		for c.Err() == nil {
			if n := int32(inFlight(devs)); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return &peak
}

// poke makes the window controller look again after the clock moved: a
// change to a device it selects (a label outside the selector).
func poke(d *itmv1.Device) {
	GinkgoHelper()
	updateDevice(d.Name, func(d *itmv1.Device) {
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		d.Labels["poke"] = uniqueName("p")
	})
}

func maxUnavailable(v intstr.IntOrString) func(*itmv1.MaintenanceWindow) {
	return func(mw *itmv1.MaintenanceWindow) { mw.Spec.Rollout.MaxUnavailable = &v }
}

var _ = Describe("MaintenanceWindow rollout of agent devices", func() {
	AfterEach(func() { mwClock.reset() })

	It("upgrades every checked-in device, never more than maxUnavailable at a time, and reports it", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, agents := agentFleet(5, label)
		peak := watchConcurrency(devs)
		mw := window(label, maxUnavailable(intstr.FromString("40%"))) // 40% of 5 = 2

		Eventually(func() int { return inFlight(devs) }).Should(Equal(2))
		Consistently(func() int { return inFlight(devs) }).WithTimeout(time.Second).Should(Equal(2))
		Eventually(windowStatus(mw.Name)).Should(And(
			HaveField("WindowOpen", true),
			HaveField("CurrentWindow", Not(BeNil())),
			HaveField("NextWindow", Not(BeNil())),
			HaveField("Devices", itmv1.UpgradeCounts{Pending: 3, InProgress: 2}),
		))
		Expect(meta.IsStatusConditionTrue(windowStatus(mw.Name)().Conditions, itmv1.MaintenanceConditionProgressing)).To(BeTrue())
		Expect(conditionIn(windowStatus(mw.Name)().Conditions, itmv1.ConditionReconciling)).To(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", itmv1.MaintenanceReasonUpgrading)),
			"kstatus: in progress while devices upgrade inside the open window")
		Expect(upgradeOf(devs[0].Name).Window).To(Equal(mw.Name), "devices go in name order")
		Expect(upgradeOf(devs[1].Name).Window).To(Equal(mw.Name), "devices go in name order")

		for _, a := range agents {
			a.release.Store(true)
		}
		Eventually(windowStatus(mw.Name)).WithTimeout(30 * time.Second).Should(HaveField("Devices", itmv1.UpgradeCounts{Succeeded: 5}))
		Expect(peak.Load()).To(BeNumerically("<=", 2))
		Eventually(func() float64 {
			return gauge("itmanager_maintenancewindow_devices", map[string]string{"window": mw.Name, "state": "succeeded"})
		}).Should(Equal(5.0))
		Expect(gauge("itmanager_maintenancewindow_open", map[string]string{"window": mw.Name})).To(Equal(1.0))
		for _, d := range devs {
			u := upgradeOf(d.Name)
			Expect(u.State).To(Equal(itmv1.UpgradeStateSucceeded))
			Expect(u.TargetVersion).To(Equal("2.0"))
			Expect(u.Attempts).To(BeEquivalentTo(1))
			Expect(u.StartedAt).NotTo(BeNil())
			Expect(u.FinishedAt).NotTo(BeNil())
			Eventually(conditionOf(d.Name, itmv1.DeviceConditionUpToDate)).Should(Equal(metav1.ConditionTrue))
		}
		Expect(windowStatus(mw.Name)().BlockedBy).To(BeEmpty())
		Expect(meta.FindStatusCondition(windowStatus(mw.Name)().Conditions, itmv1.ConditionReconciling)).To(BeNil(), "kstatus: Reconciling goes when the rollout is done")
		Expect(meta.IsStatusConditionTrue(windowStatus(mw.Name)().Conditions, itmv1.ConditionReady)).To(BeTrue())
	})

	It("halts after maxFailures failures in the window; paused, starts nothing even with budget to spare; unpaused, resumes only within maxUnavailable", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, agents := agentFleet(4, label)
		for _, a := range agents {
			a.fail.Store(true)
		}
		mw := window(label, maxUnavailable(intstr.FromInt32(1)))
		Eventually(windowStatus(mw.Name)).WithTimeout(20 * time.Second).Should(And(
			HaveField("BlockedBy", MatchRegexp(`^failure budget: 1 failed in this window \(maxFailures 1\); last: \S+: disk full$`)),
			HaveField("Devices", itmv1.UpgradeCounts{Pending: 3, Failed: 1}),
		))
		Expect(upgradeOf(devs[0].Name)).To(And(HaveField("State", itmv1.UpgradeStateFailed), HaveField("Message", "disk full")))
		Consistently(func() int { return inFlight(devs) }).WithTimeout(time.Second).Should(BeZero())
		c := meta.FindStatusCondition(windowStatus(mw.Name)().Conditions, itmv1.MaintenanceConditionDegraded)
		Expect(c).NotTo(BeNil())
		Expect(c.Status).To(Equal(metav1.ConditionTrue))
		Expect(c.Reason).To(Equal(itmv1.ReasonFailureBudget))

		By("pausing, and raising the failure budget in the same change: still nothing starts")
		for _, a := range agents {
			a.fail.Store(false)
			a.release.Store(true)
		}
		Expect(updateAs(k8s, mw.Name, func(cur *itmv1.MaintenanceWindow) {
			cur.Spec.Paused = true
			cur.Spec.Rollout.MaxFailures = ptr.To[int32](5)
		})).To(Succeed())
		Eventually(windowStatus(mw.Name)).Should(HaveField("BlockedBy", "paused"))
		Consistently(func() int { return inFlight(devs) }).WithTimeout(2 * time.Second).Should(BeZero())
		for _, d := range devs[1:] {
			Expect(upgradeOf(d.Name).State).To(BeEmpty(), "%s started while paused", d.Name)
		}

		By("unpausing: the rest are upgraded, one at a time")
		peak := watchConcurrency(devs)
		Expect(updateAs(k8s, mw.Name, func(cur *itmv1.MaintenanceWindow) { cur.Spec.Paused = false })).To(Succeed())
		Eventually(windowStatus(mw.Name)).WithTimeout(30 * time.Second).Should(HaveField("Devices", itmv1.UpgradeCounts{Succeeded: 3, Failed: 1}))
		Expect(peak.Load()).To(BeEquivalentTo(1), "maxUnavailable 1 was used and never exceeded")
		for _, d := range devs[1:] {
			Expect(upgradeOf(d.Name)).To(And(HaveField("State", itmv1.UpgradeStateSucceeded), HaveField("Window", mw.Name)))
		}
	})

	It("starts nothing while paused, and proceeds when unpaused", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, _ := agentFleet(2, label)
		mw := window(label, func(mw *itmv1.MaintenanceWindow) { mw.Spec.Paused = true })
		Eventually(windowStatus(mw.Name)).Should(HaveField("BlockedBy", "paused"))
		Consistently(func() int { return inFlight(devs) }).WithTimeout(time.Second).Should(BeZero())
		Expect(updateAs(k8s, mw.Name, func(cur *itmv1.MaintenanceWindow) { cur.Spec.Paused = false })).To(Succeed())
		Eventually(func() int { return inFlight(devs) }).Should(Equal(1))
	})

	It("lets in-flight upgrades finish when the window closes, starts nothing new, and fails a silent one at upgradeTimeout", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, agents := agentFleet(3, label)
		// A daily window starting at the next whole minute, for an hour; the
		// window controller's clock reads 10 minutes into it. (The check-in
		// service keeps real time, so the times stay near it.)
		start := time.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute)
		mwClock.setNow(start.Add(10 * time.Minute))
		mw := window(label, func(mw *itmv1.MaintenanceWindow) {
			mw.Spec.Windows = []itmv1.Window{{Schedule: fmt.Sprintf("%d %d * * *", start.Minute(), start.Hour()), Duration: metav1.Duration{Duration: time.Hour}}}
			mw.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromInt32(2))
			mw.Spec.Rollout.MaxFailures = ptr.To[int32](5)
			mw.Spec.Rollout.UpgradeTimeout = &metav1.Duration{Duration: 3 * time.Hour}
		})
		Eventually(func() int { return inFlight(devs) }).Should(Equal(2))
		// The second agent goes silent: it will never report.
		agents[1].stop()

		By("closing the window")
		mwClock.setNow(start.Add(70 * time.Minute))
		poke(devs[2])
		Eventually(windowStatus(mw.Name)).Should(And(
			HaveField("WindowOpen", false),
			HaveField("CurrentWindow", BeNil()),
			HaveField("BlockedBy", "outside window; next opens "+start.Add(24*time.Hour).Format(time.RFC3339)),
		))
		agents[0].release.Store(true)
		Eventually(func() itmv1.UpgradeState { return upgradeOf(devs[0].Name).State }).Should(Equal(itmv1.UpgradeStateSucceeded),
			"an upgrade under way finishes after the window closed")
		Consistently(func() itmv1.UpgradeState { return upgradeOf(devs[2].Name).State }).WithTimeout(time.Second).Should(BeEmpty(),
			"nothing new starts outside the window")

		By("reaching upgradeTimeout with the silent device still in flight")
		mwClock.setNow(start.Add(3*time.Hour + 15*time.Minute))
		poke(devs[2])
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(devs[1].Name) }).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", ContainSubstring("no result within upgradeTimeout 3h0m0s")),
		))
		Eventually(windowStatus(mw.Name)).Should(HaveField("Devices", itmv1.UpgradeCounts{Pending: 1, Succeeded: 1, Failed: 1}))
	})

	It("withdraws authorizations not yet started when the window is deleted", func() {
		label := map[string]string{"ring": uniqueName("r")}
		d := agentDevice(func(d *itmv1.Device) {
			d.Labels = label
			d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
		})
		a := startAgent(d.Name, "1.0")
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		a.stop() // silent from now on: the authorization is never picked up
		mw := window(label, nil)
		Eventually(func() itmv1.UpgradeState { return upgradeOf(d.Name).State }).Should(Equal(itmv1.UpgradeStateAuthorized))
		Expect(k8s.Delete(ctx, mw)).To(Succeed())
		Eventually(func() float64 { return gauge("itmanager_maintenancewindow_open", map[string]string{"window": mw.Name}) }).
			Should(Equal(-1.0), "a deleted window's series go")
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(d.Name) }).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", "MaintenanceWindow "+mw.Name+" was deleted before the upgrade started"),
		))
	})

	It("never lets two overlapping windows upgrade the same device, nor exceed either's budget together", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, agents := agentFleet(2, label)
		peak := watchConcurrency(devs)
		a := window(label, maxUnavailable(intstr.FromInt32(1)))
		b := window(label, maxUnavailable(intstr.FromInt32(1)))
		Eventually(func() int { return inFlight(devs) }).Should(Equal(1))
		Consistently(func() int { return inFlight(devs) }).WithTimeout(time.Second).Should(Equal(1))
		for _, ag := range agents {
			ag.release.Store(true)
		}
		for _, d := range devs {
			Eventually(func() itmv1.UpgradeState { return upgradeOf(d.Name).State }).WithTimeout(20 * time.Second).Should(Equal(itmv1.UpgradeStateSucceeded))
			Expect(upgradeOf(d.Name).Window).To(BeElementOf(a.Name, b.Name))
			Expect(upgradeOf(d.Name).Attempts).To(BeEquivalentTo(1), "claimed once")
		}
		Expect(peak.Load()).To(BeNumerically("<=", 1))
	})
})
