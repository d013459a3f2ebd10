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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

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

	It("lets an invalid window stored before the webhook existed be deleted", func() {
		// Deletes never reach the webhook (it registers CREATE and UPDATE only).
		m := window(nil)
		Expect(k8s.Create(ctx, m)).To(Succeed())
		Expect(k8s.Delete(ctx, m)).To(Succeed())
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
