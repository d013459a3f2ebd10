package faults

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var _ = Describe("Webhook down", Label("integration"), func() {
	It("refuses a MaintenanceWindow while both managers are stopped, saying the itmanager manager's webhook is unreachable, admits every other kind, and admits the window once a manager is back", func() {
		ensureBothRunning()
		for _, r := range replicas {
			r.stop()
		}
		for _, r := range replicas {
			Expect(r.running()).To(BeFalse())
		}

		mw := func() *itmv1.MaintenanceWindow {
			return &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("down")}, Spec: itmv1.MaintenanceWindowSpec{
				Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "none"}}, Windows: alwaysOpen}}
		}
		err := k8s.Create(ctx, mw())
		Expect(err).To(HaveOccurred(), "no webhook answers: failurePolicy Fail refuses")
		GinkgoWriter.Printf("MaintenanceWindow refused: %v\n", err)
		AddReportEntry("webhook down", err.Error())
		Expect(err.Error()).To(And(
			ContainSubstring(`failed calling webhook "maintenancewindow-schedules.checked-by-the-itmanager-manager.itmanager.io"`),
			ContainSubstring("/validate-itmanager-io-v1alpha1-maintenancewindow"),
		))

		By("every other kind still being admitted: their checks run in the API server")
		ns := uniqueName("shop")
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		others := []client.Object{
			&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("down-laptop")},
				Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}},
			&itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("down")}, Spec: itmv1.AccessPolicySpec{
				Subjects: itmv1.Subjects{Groups: []string{"sre"}}, Destinations: []itmv1.Destination{{Namespaces: []string{ns}}}}},
			&itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("down-joiner")}, Spec: itmv1.OnboardingRequestSpec{
				Person: itmv1.Person{DisplayName: "Ada", Email: "ada@example.com"}, ApprovalRequired: ptr.To(true)}},
			&itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("down-kube")}, Spec: itmv1.AccountProviderSpec{
				Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: uniqueName("down-users")}}},
		}
		for _, o := range others {
			Expect(k8s.Create(ctx, o)).To(Succeed(), "%T %s", o, o.GetName())
			DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, o))).To(Succeed()) })
		}

		By("a manager coming back: the window is admitted")
		replicas[0].start()
		replicas[0].waitReady()
		back := mw()
		Eventually(func() error { return k8s.Create(ctx, back) }).WithTimeout(30 * time.Second).Should(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, back))).To(Succeed()) })
	})
})
