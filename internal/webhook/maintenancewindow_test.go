//go:build integration

package webhook_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
	itmwebhook "github.com/itmanager-io/itmanager/internal/webhook"
)

// webhookName is the MaintenanceWindow webhook's name in the configuration.
const webhookName = "maintenancewindow-schedules.checked-by-the-itmanager-manager.itmanager.io"

// unregisterWebhook removes the ValidatingWebhookConfiguration that holds
// the MaintenanceWindow webhook, as before it was installed, and puts it
// back when the spec ends (registerWebhook does that sooner).
func unregisterWebhook() {
	GinkgoHelper()
	list := &admissionregistrationv1.ValidatingWebhookConfigurationList{}
	Expect(k8s.List(ctx, list)).To(Succeed())
	for i := range list.Items {
		c := &list.Items[i]
		for _, w := range c.Webhooks {
			if w.Name == webhookName {
				removedWebhook = c.DeepCopy()
				Expect(k8s.Delete(ctx, c)).To(Succeed())
				DeferCleanup(registerWebhook)
				return
			}
		}
	}
	Fail("no ValidatingWebhookConfiguration holds " + webhookName)
}

var removedWebhook *admissionregistrationv1.ValidatingWebhookConfiguration

func registerWebhook() {
	GinkgoHelper()
	if removedWebhook == nil {
		return
	}
	c := removedWebhook.DeepCopy()
	c.ResourceVersion, c.UID, c.CreationTimestamp, c.ManagedFields = "", "", metav1.Time{}, nil
	Expect(k8s.Create(ctx, c)).To(Succeed())
	removedWebhook = nil
}

var seq int

func window(mutate func(*itmv1.MaintenanceWindow)) *itmv1.MaintenanceWindow {
	seq++
	m := &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("weekly-%d", seq)},
		Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "1"}},
			TimeZone: "Europe/Berlin",
			Windows:  []itmv1.Window{{Schedule: "0 2 * * SAT", Duration: metav1.Duration{Duration: 4 * time.Hour}}},
		},
	}
	if mutate != nil {
		mutate(m)
	}
	return m
}

var _ = Describe("MaintenanceWindow webhook", func() {
	It("accepts a weekly window in Europe/Berlin with a recurring blackout", func() {
		Expect(k8s.Create(ctx, window(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Schedule: "0 0 1 * *", Duration: &metav1.Duration{Duration: 48 * time.Hour}}}
		}))).To(Succeed())
	})

	DescribeTable("rejects",
		func(m *itmv1.MaintenanceWindow, want ...string) {
			err := k8s.Create(ctx, m)
			Expect(err).To(HaveOccurred(), "the API server accepted a bad MaintenanceWindow")
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got: %v", err)
			GinkgoWriter.Println(err)
			for _, w := range want {
				Expect(err.Error()).To(ContainSubstring(w))
			}
		},
		Entry("a cron with four fields", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 * SAT" }),
			"spec.windows[0].schedule", "must have 5 fields"),
		Entry("a cron with seconds", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 0 2 * * SAT" }),
			"spec.windows[0].schedule", "must have 5 fields"),
		Entry("a minute out of range", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "60 2 * * SAT" }),
			"spec.windows[0].schedule", "minute field", "out of range 0-59"),
		Entry("an hour out of range", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 25 * * SAT" }),
			"spec.windows[0].schedule", "hour field"),
		Entry("an unknown weekday name", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 * * SATURDAY" }),
			"spec.windows[0].schedule", "day-of-week field"),
		Entry("an unknown month name", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 1 JANUARY *" }),
			"spec.windows[0].schedule", "month field"),
		Entry("day-of-month and day-of-week both restricted", window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 1-7 * SAT" }),
			"spec.windows[0].schedule", "both restricted"),
		Entry("a bad second window", window(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Windows = append(m.Spec.Windows, itmv1.Window{Schedule: "0 2 * * 9", Duration: metav1.Duration{Duration: time.Hour}})
		}), "spec.windows[1].schedule", "day-of-week field"),
		Entry("a bad recurring blackout", window(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Schedule: "0 0 L * *", Duration: &metav1.Duration{Duration: time.Hour}}}
		}), "spec.blackouts[0].schedule", "day-of-month field"),
		Entry("an unknown time zone", window(func(m *itmv1.MaintenanceWindow) { m.Spec.TimeZone = "Europe/Atlantis" }),
			"spec.timeZone", "unknown IANA time zone"),
		Entry("the machine-dependent Local time zone", window(func(m *itmv1.MaintenanceWindow) { m.Spec.TimeZone = "Local" }),
			"spec.timeZone", "not an IANA time zone name"),
		Entry("a time zone and a schedule both bad, reporting both", window(func(m *itmv1.MaintenanceWindow) {
			m.Spec.TimeZone = "Mars/Olympus_Mons"
			m.Spec.Windows[0].Schedule = "0 2 * * * *"
		}), "spec.timeZone", "spec.windows[0].schedule"),
	)

	It("rejects an update that breaks the schedule and keeps the stored one", func() {
		m := window(nil)
		Expect(k8s.Create(ctx, m)).To(Succeed())
		m.Spec.Windows[0].Schedule = "0 2 31 2 MON"
		err := k8s.Update(ctx, m)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got: %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.windows[0].schedule"))

		stored := &itmv1.MaintenanceWindow{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: m.Name}, stored)).To(Succeed())
		Expect(stored.Spec.Windows[0].Schedule).To(Equal("0 2 * * SAT"))
	})

	It("lets an invalid window stored before the webhook existed be deleted", Serial, func() {
		bad := window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 31 2 MON" })
		Expect(itmwebhook.ValidateMaintenanceWindow(bad)).NotTo(BeEmpty(), "the window must be one the webhook refuses")

		By("storing it while the webhook is not registered")
		unregisterWebhook()
		Eventually(func() error { return k8s.Create(ctx, bad.DeepCopy()) }).Should(Succeed())
		registerWebhook()
		Eventually(func() bool {
			return apierrors.IsInvalid(k8s.Create(ctx, window(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 31 2 MON" })))
		}).Should(BeTrue(), "the webhook is back")

		stored := &itmv1.MaintenanceWindow{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(bad), stored)).To(Succeed())
		Expect(stored.Spec.Windows[0].Schedule).To(Equal("0 2 31 2 MON"))
		Expect(itmwebhook.ValidateMaintenanceWindow(stored)).NotTo(BeEmpty(), "what is stored is invalid")

		By("deleting it: deletes never reach the webhook (it registers CREATE and UPDATE only)")
		Expect(k8s.Delete(ctx, stored)).To(Succeed())
		Expect(apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(bad), stored))).To(BeTrue())
	})
})

var _ = Describe("config/samples", func() {
	It("are all accepted by the API server and the webhook", func() {
		root, err := testenv.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		files, err := filepath.Glob(filepath.Join(root, "config", "samples", "itmanager_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		kinds := map[string]bool{}
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			obj := &unstructured.Unstructured{}
			Expect(yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096).Decode(&obj.Object)).To(Succeed(), f)
			Expect(k8s.Create(ctx, obj)).To(Succeed(), f)
			kinds[obj.GetKind()] = true
		}
		Expect(kinds).To(HaveLen(5), "a sample for every kind")
	})
})
