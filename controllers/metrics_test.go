package controllers_test

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// scrape reads the running manager's /metrics as Prometheus would: the
// type of every itmanager_* family, and every sample line.
func scrape() (types map[string]string, samples []string) {
	GinkgoHelper()
	resp, err := http.Get(metricsURL)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	types = map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "itmanager_") {
			types[f[2]] = f[3]
		} else if strings.HasPrefix(line, "itmanager_") {
			samples = append(samples, line)
		}
	}
	Expect(sc.Err()).NotTo(HaveOccurred())
	return types, samples
}

// documentedMetrics are the metrics docs/metrics.md lists, by type (the
// same table rows hack/tools/prometheus checks the dashboard and rules
// against).
func documentedMetrics() map[string]string {
	GinkgoHelper()
	root, err := testenv.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	data, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	Expect(err).NotTo(HaveOccurred())
	out := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(itmanager_[a-z0-9_]+)` \\| (gauge|counter|histogram) \\|").FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = m[2]
	}
	Expect(len(out)).To(BeNumerically(">=", 10), "docs/metrics.md table rows are | `name` | type | ...")
	return out
}

// absentByDesign are documented metrics that have no series until their
// condition occurs, which this spec does not stage: a blocked
// offboarding, a degraded window, a Node discovery conflict.
var absentByDesign = map[string]bool{
	"itmanager_onboarding_offboarding_oldest_timestamp_seconds": true,
	"itmanager_maintenancewindow_degraded":                      true,
	"itmanager_nodediscovery_name_conflicts":                    true,
}

var _ = Describe("Metrics", func() {
	It("exports every metric docs/metrics.md lists, with its type, and no itmanager metric it does not list", func() {
		By("objects of every kind, a check-in and an upgrade in progress")
		kube := kubeProvider()
		person := uniqueName("metrics")
		activePerson(person, nil, kube.Name)
		ns := newNamespace(nil)
		server := staticDevice(person, nil, "10.30.0.1")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Users = []string{person}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}, Ports: []itmv1.Port{{Port: 443}}}}
		})
		Eventually(ingressCIDRs(ns, "itm-"+p.Name)).Should(Equal([]string{"10.30.0.1/32"}))
		// A lifecycle change the access controller observes and enforces:
		// one propagation measured.
		propagated := histogramCount("itmanager_access_propagation_seconds")
		updateDevice(server.Name, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })
		Eventually(ingressCIDRs(ns, "itm-"+p.Name)).Should(Equal([]string{"isolated"}))
		label := map[string]string{"metrics": uniqueName("spec")}
		d := agentDevice(func(d *itmv1.Device) {
			d.Labels = label
			d.Spec.OS.TargetVersion = "24.10" // facts() reports 24.04
		})
		token := tokenOf(d.Name)
		Expect(post(d.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.30.0.2")}).code).To(Equal(http.StatusOK))
		mw := window(label, nil)
		Eventually(func() itmv1.UpgradeState { return upgradeOf(d.Name).State }).WithTimeout(20 * time.Second).
			Should(Equal(itmv1.UpgradeStateAuthorized))

		By("scraping /metrics until the inventory shows them")
		var types map[string]string
		Eventually(func(g Gomega) {
			var samples []string
			types, samples = scrape()
			g.Expect(samples).To(ContainElements(
				MatchRegexp(`^itmanager_accounts\{provider="%s",state="Provisioned"\} 1$`, kube.Name),
				MatchRegexp(`^itmanager_accesspolicy_devices\{policy="%s",verdict="denied"\} 1$`, p.Name),
				MatchRegexp(`^itmanager_device_upgrades\{state="Authorized",window="%s"\} 1$`, mw.Name),
				MatchRegexp(`^itmanager_maintenancewindow_open\{window="%s"\} 1$`, mw.Name),
				MatchRegexp(`^itmanager_devices\{class="Laptop",compliance="(non-compliant|compliant|unknown)",phase="Available"\} [1-9]`),
				// Fresh, or stale already: the suite's staleAfter is 3 s.
				MatchRegexp(`^itmanager_devices_checkin\{class="Laptop",state="(fresh|stale)"\} [1-9]`),
				MatchRegexp(`^itmanager_devices\{class="Server",compliance="unknown",phase="Retired"\} [1-9]`),
				MatchRegexp(`^itmanager_checkins_total\{code="200"\} [1-9]`),
				MatchRegexp(`^itmanager_certificate_expiry_timestamp_seconds\{certificate="(webhook|checkin)"\} [0-9.e+]+$`),
				MatchRegexp(`^itmanager_onboarding_provisioning_errors_total\{provider="%s"\} 0$`, kube.Name),
				MatchRegexp(`^itmanager_inventory_scrape_errors\{kind="Device"\} 0$`),
			))
		}).WithTimeout(30 * time.Second).Should(Succeed())

		Expect(histogramCount("itmanager_access_propagation_seconds")).To(BeNumerically(">", propagated),
			"the retirement's propagation is measured")

		By("comparing the names with docs/metrics.md")
		documented := documentedMetrics()
		for name, typ := range types {
			Expect(documented).To(HaveKeyWithValue(name, typ), "%s (%s) is exported but not in docs/metrics.md", name, typ)
		}
		for name, typ := range documented {
			if absentByDesign[name] {
				continue
			}
			Expect(types).To(HaveKeyWithValue(name, typ), "docs/metrics.md lists %s (%s), the manager does not export it", name, typ)
		}
	})
})

// histogramCount is the sample count of a histogram without labels.
func histogramCount(name string) uint64 {
	GinkgoHelper()
	families, err := ctrlmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	Fail("no histogram " + name)
	return 0
}
