package faults

import (
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var _ = Describe("MaintenanceWindow deleted while every manager is down", Label("integration"), func() {
	It("fails the upgrades it left in progress, naming the window, once a manager is back, and only then lets the window go", func() {
		ensureBothRunning()
		ring := uniqueName("gone")
		label := map[string]string{"ring": ring}
		release := make(chan struct{})
		DeferCleanup(func() { close(release) })
		var runs atomic.Int32
		devices := agentLaptops(ring, 2, label)
		for i, d := range devices {
			startAgent(d, 10+i, &gatedUpgrader{release: release, all: &runs})
		}
		checkedInAt("1.0", devices...)

		devRec := record(&itmv1.DeviceList{}, nil, client.MatchingLabels(label))
		mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("gone")}, Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: label}, Windows: alwaysOpen,
			Rollout: itmv1.Rollout{MaxUnavailable: ptr.To(intstr.FromInt32(2))},
		}}
		Expect(k8s.Create(ctx, mw)).To(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, mw))).To(Succeed()) })

		By("both agents running their upgrade (InProgress), held there")
		Eventually(runs.Load).WithTimeout(60 * time.Second).Should(BeEquivalentTo(2))
		Eventually(func(g Gomega) {
			for _, d := range devices {
				g.Expect(upgradeState(getDevice(d))).To(Equal(string(itmv1.UpgradeStateInProgress)))
			}
		}).Should(Succeed())

		By("stopping every manager, then deleting the window")
		for _, r := range replicas {
			r.stop()
		}
		Expect(k8s.Delete(ctx, mw)).To(Succeed())
		held := &itmv1.MaintenanceWindow{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mw), held)).To(Succeed(), "its finalizer holds the window while no manager runs")
		Expect(held.DeletionTimestamp).NotTo(BeNil())

		By("a manager coming back and releasing the window's claims")
		replicas[0].start()
		replicas[0].waitReady()
		for _, d := range devices {
			Eventually(func() string { return upgradeState(getDevice(d)) }).WithTimeout(60*time.Second).
				Should(Equal(string(itmv1.UpgradeStateFailed)), "Device %s", d)
			Expect(getDevice(d).Status.Upgrade.Message).To(ContainSubstring(mw.Name), "the message names the deleted window")
		}
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(mw), &itmv1.MaintenanceWindow{}))
		}).WithTimeout(30*time.Second).Should(BeTrue(), "the window goes once its claims are released")

		By("checking the record of every transition: each device failed once, never authorized or started again")
		seq, _ := states(devRec, upgradeState, inFlight)
		for _, d := range devices {
			Expect(strings.Join(seq[d], " → ")).To(Equal(strings.Join([]string{"", "Authorized", "InProgress", "Failed"}, " → ")), "Device %s", d)
		}
	})
})
