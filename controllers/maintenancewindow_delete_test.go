package controllers_test

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/informer"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// startWindowManager starts a manager running only a MaintenanceWindow
// controller, under the manager's RBAC, as a manager process starting: its
// informers see every Device for the first time. It returns a function that
// stops it and waits for it to end (also called when the spec ends).
func startWindowManager() func() {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Scheme:     testenv.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options{ByObject: controllers.CacheByObject(testenv.DevicesNamespace, testenv.UpgradesNamespace), NewInformer: informer.New},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controllers.MaintenanceWindowReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: mwClock, Recorder: mgr.GetEventRecorder("itmanager-maintenance"),
		UpgradesNamespace: testenv.UpgradesNamespace, Workers: 1, DrainPoll: 300 * time.Millisecond,
	}).SetupWithManager(mgr)).To(Succeed())
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mctx)).To(Succeed())
	}()
	var once sync.Once
	stop := func() { once.Do(func() { mcancel(); <-done }) }
	DeferCleanup(stop)
	return stop
}

// windowGone reports whether the window no longer exists.
func windowGone(name string) func() bool {
	return func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: name}, &itmv1.MaintenanceWindow{}))
	}
}

// claim writes, as the admin, the upgrade claim a window left on a device.
func claim(name string, state itmv1.UpgradeState, window string) {
	GinkgoHelper()
	d := getDevice(name)
	base := d.DeepCopy()
	d.Status.Upgrade = &itmv1.UpgradeStatus{State: state, TargetVersion: d.Spec.OS.TargetVersion, Window: window,
		StartedAt: ptr.To(metav1.Now()), Attempts: 1, Message: "claimed"}
	Expect(k8s.Status().Patch(ctx, d, client.MergeFrom(base))).To(Succeed())
}

var _ = Describe("MaintenanceWindow deletion", func() {
	AfterEach(func() { mwClock.reset() })

	It("holds a deleted window until its devices are released: the authorization withdrawn, the upgrade in progress failed naming the window", func() {
		label := map[string]string{"ring": uniqueName("r")}
		devs, agents := agentFleet(2, label)
		agents[0].stop() // silent: its authorization is never picked up
		mw := window(label, maxUnavailable(intstr.FromInt32(2)))
		Eventually(func() itmv1.UpgradeState { return upgradeOf(devs[0].Name).State }).Should(Equal(itmv1.UpgradeStateAuthorized))
		Eventually(func() itmv1.UpgradeState { return upgradeOf(devs[1].Name).State }).Should(Equal(itmv1.UpgradeStateInProgress))
		Eventually(func() []string {
			cur := &itmv1.MaintenanceWindow{}
			_ = k8s.Get(ctx, client.ObjectKeyFromObject(mw), cur)
			return cur.Finalizers
		}).Should(ContainElement(itmv1.MaintenanceWindowFinalizer))

		Expect(k8s.Delete(ctx, mw)).To(Succeed())
		Eventually(windowGone(mw.Name)).Should(BeTrue())
		// Released before the window went, not some time after.
		Expect(upgradeOf(devs[0].Name)).To(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", "MaintenanceWindow "+mw.Name+" was deleted before the upgrade started"),
			HaveField("FinishedAt", Not(BeNil())),
		))
		Expect(upgradeOf(devs[1].Name)).To(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", "MaintenanceWindow "+mw.Name+" was deleted while the upgrade was in progress; its result is no longer awaited"),
			HaveField("FinishedAt", Not(BeNil())),
		))
	})

	It("releases, once a manager starts, claims naming a window that no longer exists (as a window deleted while no manager ran, before it had a finalizer, leaves them): the check-in service stops authorizing them and another window takes the devices", Serial, func() {
		label := map[string]string{"ring": uniqueName("r")}
		gone := window(map[string]string{"ring": uniqueName("nothing")}, nil)
		Expect(k8s.Delete(ctx, gone)).To(Succeed())
		Eventually(windowGone(gone.Name)).Should(BeTrue())

		By("the claims the window left, as a manager that was down while it was deleted (or one from before the finalizer) finds them")
		var devs []*itmv1.Device
		for range 2 {
			devs = append(devs, agentDevice(func(d *itmv1.Device) {
				d.Labels = label
				d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
			}))
		}
		token := tokenOf(devs[0].Name)
		claim(devs[0].Name, itmv1.UpgradeStateAuthorized, gone.Name)
		claim(devs[1].Name, itmv1.UpgradeStateInProgress, gone.Name)
		// The running manager saw no deletion of a window with claims: to it
		// these are changes, and a claim naming a window it does not know is
		// not its to drop (it may be one just created).
		Consistently(func() itmv1.UpgradeState { return upgradeOf(devs[0].Name).State }).WithTimeout(time.Second).Should(Equal(itmv1.UpgradeStateAuthorized))
		res := post(devs[0].Name, token, checkin.Request{Sequence: 1, Facts: checkin.Facts{OSVersion: "1.0"}})
		Expect(res.code).To(Equal(200), res.String())
		Expect(res.body).To(HaveKeyWithValue("upgrade", HaveKeyWithValue("window", gone.Name)), "the orphaned authorization is handed out")

		By("a manager starting")
		stop := startWindowManager()
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(devs[0].Name) }).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", "MaintenanceWindow "+gone.Name+" was deleted before the upgrade started"),
		))
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(devs[1].Name) }).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", "MaintenanceWindow "+gone.Name+" was deleted while the upgrade was in progress; its result is no longer awaited"),
		))
		stop()

		By("the check-in service hands the withdrawn authorization out no more")
		res = post(devs[0].Name, token, checkin.Request{Sequence: 2, Facts: checkin.Facts{OSVersion: "1.0"}})
		Expect(res.code).To(Equal(200), res.String())
		Expect(res.body).NotTo(HaveKey("upgrade"))

		By("another window counts them available and starts both (maxUnavailable 2)")
		for _, d := range devs {
			startAgent(d.Name, "1.0")
			Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		}
		next := window(label, maxUnavailable(intstr.FromInt32(2)))
		for _, d := range devs {
			Eventually(func() itmv1.UpgradeStatus { return upgradeOf(d.Name) }).WithTimeout(15*time.Second).Should(And(
				HaveField("Window", next.Name),
				HaveField("State", BeElementOf(itmv1.UpgradeStateAuthorized, itmv1.UpgradeStateInProgress)),
				HaveField("Attempts", BeEquivalentTo(2)),
			), d.Name)
		}
	})
})
