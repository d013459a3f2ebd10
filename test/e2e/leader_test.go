//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func leaderLossSpecs() {
	Describe("Leader loss", func() {
		It("finishes an agent rollout whose leader Pod was deleted with grace 0 mid-rollout: the other replica upgrades every device once, never more than maxUnavailable at once", func() {
			waitAvailable(managerDeployment(), 2)
			ring := uniqueName("ring")
			labels := map[string]string{"e2e-ring": ring}
			release := filepath.Join(work, ring+".release")
			var devices []*netDevice
			for i := range 4 {
				name := fmt.Sprintf("%s-laptop-%d", ring, i)
				// The device's upgrade: count the run, wait for the spec to
				// release it, then "install" the target as a package manager
				// would.
				dir := deviceDir(name)
				upgrade := fmt.Sprintf(`--upgrade-command=echo run >> %[1]s/runs; while [ ! -e %[2]s ]; do sleep 0.1; done; printf 'ID=e2e\nVERSION_ID="%%s"\n' "$ITMANAGER_TARGET_VERSION" > %[1]s/root/etc/os-release`,
					dir, release)
				d := agentDevice(name, labels, "1.0", true, []string{upgrade}, func(dev *itmv1.Device) {
					dev.Spec.OS.TargetVersion = "2.0"
				})
				devices = append(devices, d)
			}
			for _, d := range devices {
				Eventually(func(g Gomega) {
					dev := getDevice(d.name)
					g.Expect(conditionTrue(dev.Status.Conditions, itmv1.DeviceConditionCheckedIn)).To(BeTrue())
					g.Expect(dev.Status.Observed).NotTo(BeNil())
					g.Expect(dev.Status.Observed.OSVersion).To(Equal("1.0"))
				}).Should(Succeed(), "Device %s checked in at 1.0", d.name)
			}

			devRec := record(&itmv1.DeviceList{}, client.MatchingLabels(labels))
			old := leaderPod()
			oldHolder := holder(leaderLease())
			mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("agents")}, Spec: itmv1.MaintenanceWindowSpec{
				Selector: metav1.LabelSelector{MatchLabels: labels}, Windows: alwaysOpen,
				Rollout: itmv1.Rollout{MaxUnavailable: ptr.To(intstr.FromInt32(2))},
			}}
			Expect(k8s.Create(ctx, mw)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(mw) })

			By("deleting the leader Pod with grace 0 once two agents run their upgrade, two still pending")
			Eventually(func() int { return runs(devices) }).Should(Equal(2))
			Expect(k8s.Delete(ctx, old, client.GracePeriodSeconds(0))).To(Succeed())
			killed := time.Now()
			Eventually(func() string { return holder(leaderLease()) }).WithTimeout(2*time.Minute).
				ShouldNot(Or(Equal(oldHolder), BeEmpty()), "nobody took over from %s", oldHolder)
			next := leaderPod()
			Expect(next.Name).NotTo(Equal(old.Name))
			l := leaderLease()
			figures.leaderLoss = fmt.Sprintf("leader Pod %s deleted with grace 0 with 2 of 4 agent upgrades under way; %s took over %s later (acquireTime; chart lease defaults)",
				old.Name, next.Name, l.Spec.AcquireTime.Sub(killed).Round(100*time.Millisecond))
			AddReportEntry("takeover", figures.leaderLoss)
			Expect(os.WriteFile(release, nil, 0o644)).To(Succeed())

			By("the other replica finishing the rollout")
			for _, d := range devices {
				Eventually(func() itmv1.UpgradeState { return upgradeOf(d.name).State }).WithTimeout(3*time.Minute).
					Should(Equal(itmv1.UpgradeStateSucceeded), "Device %s", d.name)
			}
			Eventually(func(g Gomega) {
				for _, d := range devices {
					g.Expect(upgradeState(devRec.latest()[d.name].(*itmv1.Device))).To(Equal(string(itmv1.UpgradeStateSucceeded)))
				}
			}).Should(Succeed())

			By("checking the record of every transition")
			seq, peak := states(devRec, upgradeState, inFlight)
			for _, d := range devices {
				Expect(seq[d.name]).To(Equal([]string{"", "Authorized", "InProgress", "Succeeded"}), "Device %s upgraded once", d.name)
				b, err := os.ReadFile(filepath.Join(d.dir, "runs"))
				Expect(err).NotTo(HaveOccurred())
				Expect(strings.Count(string(b), "run")).To(Equal(1), "the agent of %s ran its upgrade once", d.name)
				Expect(getDevice(d.name).Status.Observed.OSVersion).To(Equal("2.0"))
			}
			Expect(peak).To(BeNumerically("<=", 2), "devices in flight at once (maxUnavailable 2)")
			Eventually(func() itmv1.UpgradeCounts {
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(mw), mw)
				return mw.Status.Devices
			}).Should(Equal(itmv1.UpgradeCounts{Succeeded: 4}))
			waitAvailable(managerDeployment(), 2)
		})
	})
}

// runs counts the upgrade command runs of the devices so far.
func runs(devices []*netDevice) int {
	n := 0
	for _, d := range devices {
		if b, err := os.ReadFile(filepath.Join(d.dir, "runs")); err == nil {
			n += strings.Count(string(b), "run")
		}
	}
	return n
}

func upgradeState(d *itmv1.Device) string {
	if d.Status.Upgrade == nil {
		return ""
	}
	return string(d.Status.Upgrade.State)
}

func inFlight(d *itmv1.Device) bool {
	s := upgradeState(d)
	return s == string(itmv1.UpgradeStateAuthorized) || s == string(itmv1.UpgradeStateInProgress)
}
