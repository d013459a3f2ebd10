package controllers_test

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// osVersionID is what the agent should report on this machine.
func osVersionID() string {
	data, err := os.ReadFile("/etc/os-release")
	Expect(err).NotTo(HaveOccurred())
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_ID="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

var _ = Describe("The itmanager-agent binary", Ordered, func() {
	var agentBin string

	BeforeAll(func() {
		root, err := testenv.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		agentBin = filepath.Join(GinkgoT().TempDir(), "itmanager-agent")
		build := exec.Command("go", "build", "-ldflags", "-X github.com/itmanager-io/itmanager/internal/version.Version=v9.9.9-test", "-o", agentBin, "./cmd/itmanager-agent")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	})

	// install writes the enrolment Secret's keys into a directory, as a
	// Secret volume or an installer would.
	install := func(name string) string {
		dir := GinkgoT().TempDir()
		tokenOf(name)
		for k, v := range enrolment(name) {
			Expect(os.WriteFile(filepath.Join(dir, k), v, 0o600)).To(Succeed())
		}
		return dir
	}

	It("checks in once with the facts of this machine", func() {
		d := agentDevice(nil)
		dir := install(d.Name)
		cmd := exec.Command(agentBin, "--once", "--enrolment-dir", dir, "--state-file", filepath.Join(dir, "state", "seq"))
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		hostname, err := os.Hostname()
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			obs := getDevice(d.Name).Status.Observed
			g.Expect(obs).NotTo(BeNil())
			g.Expect(obs.Hostname).To(Equal(hostname))
			g.Expect(obs.AgentVersion).To(Equal("v9.9.9-test"))
			g.Expect(obs.OSVersion).To(Equal(osVersionID()))
			g.Expect(obs.Attributes).To(HaveKey("kernel"))
		}).Should(Succeed())
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		Expect(os.ReadFile(filepath.Join(dir, "state", "seq"))).NotTo(BeEmpty())

		By("a second run continuing the sequence (no replay refusal)")
		out, err = exec.Command(agentBin, "--once", "--enrolment-dir", dir, "--state-file", filepath.Join(dir, "state", "seq")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	})

	It("still checks in after someone sent sequence 2^64-1 with its token, and after its state file fell behind", func() {
		d := agentDevice(nil)
		dir := install(d.Name)
		state := filepath.Join(dir, "state", "seq")
		token := tokenOf(d.Name)
		out, err := exec.Command(agentBin, "--once", "--enrolment-dir", dir, "--state-file", state).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(os.ReadFile(state)).To(Equal([]byte("1")))

		By("refusing a huge sequence from another holder of the token")
		time.Sleep(checkinMinInterval) // after the agent's check-in, as post paces its own
		res := post(d.Name, token, checkin.Request{Sequence: math.MaxUint64, Facts: facts()})
		Expect(res.code).To(Equal(409), res.String())
		out, err = exec.Command(agentBin, "--once", "--enrolment-dir", dir, "--state-file", state).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("2"))

		By("continuing from the service's sequence when someone else checked in with the token")
		time.Sleep(checkinMinInterval) // after the agent's check-in, which post does not pace
		Expect(post(d.Name, token, checkin.Request{Sequence: 3, Facts: facts()}).code).To(Equal(200))
		time.Sleep(checkinMinInterval)
		out, err = exec.Command(agentBin, "--once", "--enrolment-dir", dir, "--state-file", state).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("continuing from its last accepted one"))
		Expect(leaseOf(d.Name).Annotations[checkin.AnnotationSequence]).To(Equal("4"))
		Expect(os.ReadFile(state)).To(Equal([]byte("4")))
	})

	It("keeps running through an unreachable server and a token rotation, and stops cleanly", func() {
		d := agentDevice(nil)
		dir := install(d.Name)
		realURL, err := os.ReadFile(filepath.Join(dir, checkin.SecretKeyURL))
		Expect(err).NotTo(HaveOccurred())
		// Start pointed at a port nobody listens on.
		Expect(os.WriteFile(filepath.Join(dir, checkin.SecretKeyURL),
			[]byte(fmt.Sprintf("https://127.0.0.1:%d/v1/devices/%s/checkin", freePort(), d.Name)), 0o600)).To(Succeed())

		cmd := exec.Command(agentBin, "--enrolment-dir", dir, "--state-file", filepath.Join(dir, "seq"),
			"--interval", "1s", "--max-backoff", "1s", "--log-level", "debug")
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill() })
		Eventually(session.Err).WithTimeout(10 * time.Second).Should(gbytes.Say("Check-in failed"))

		By("recovering when the service is reachable, without a restart")
		Expect(os.WriteFile(filepath.Join(dir, checkin.SecretKeyURL), realURL, 0o600)).To(Succeed())
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).WithTimeout(10 * time.Second).Should(Equal(metav1.ConditionTrue))
		Eventually(session.Err).Should(gbytes.Say("Check-in succeeded again"))
		first := leaseOf(d.Name).Spec.RenewTime.Time
		Eventually(func() time.Time { return leaseOf(d.Name).Spec.RenewTime.Time }).WithTimeout(5 * time.Second).Should(BeTemporally(">", first))

		By("telling clearly that a re-enrolment revoked its token, and picking up the new one")
		updateDevice(d.Name, func(d *itmv1.Device) { d.Spec.Agent.Enabled = false })
		Eventually(session.Err).WithTimeout(10 * time.Second).Should(gbytes.Say("Token rejected"))
		updateDevice(d.Name, func(d *itmv1.Device) { d.Spec.Agent.Enabled = true })
		newToken := tokenOf(d.Name)
		Expect(os.WriteFile(filepath.Join(dir, checkin.SecretKeyToken), []byte(newToken), 0o600)).To(Succeed())
		renewed := time.Now()
		Eventually(func() bool {
			l := leaseOf(d.Name)
			return l != nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(renewed)
		}).WithTimeout(10 * time.Second).Should(BeTrue())

		session.Signal(syscall.SIGTERM)
		Eventually(session).WithTimeout(5 * time.Second).Should(gexec.Exit(0))
	})

	It("runs an authorized upgrade through its upgrade command and reports the outcome", func() {
		d := agentDevice(nil)
		dir := install(d.Name)
		marker := filepath.Join(dir, "upgraded-to")
		cmd := exec.Command(agentBin, "--enrolment-dir", dir, "--state-file", filepath.Join(dir, "seq"), "--interval", "1s",
			"--upgrade-command", `printf %s "$ITMANAGER_TARGET_VERSION" > `+marker)
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill() })
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))

		dev := getDevice(d.Name)
		base := dev.DeepCopy()
		dev.Status.Upgrade = &itmv1.UpgradeStatus{State: itmv1.UpgradeStateAuthorized, TargetVersion: "99.1", Window: "ring2", Attempts: 1}
		Expect(k8s.Status().Patch(ctx, dev, client.MergeFrom(base))).To(Succeed())

		Eventually(func() itmv1.UpgradeState { return getDevice(d.Name).Status.Upgrade.State }).WithTimeout(15 * time.Second).
			Should(Equal(itmv1.UpgradeStateSucceeded))
		Expect(os.ReadFile(marker)).To(Equal([]byte("99.1")))
		u := getDevice(d.Name).Status.Upgrade
		Expect(u.StartedAt).NotTo(BeNil())
		Expect(u.FinishedAt).NotTo(BeNil())
		Expect(bytes.Count(session.Err.Contents(), []byte("Upgrading"))).To(Equal(1), "the upgrade runs once")
	})

	It("upgrades under a MaintenanceWindow: authorized, the command run, the new version reported, Succeeded", func() {
		label := map[string]string{"ring": uniqueName("agents")}
		d := agentDevice(func(d *itmv1.Device) {
			d.Labels = label
			d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "42.1"}
		})
		dir := install(d.Name)
		// A root of its own, whose os-release the upgrade command rewrites,
		// as a package manager would.
		root := filepath.Join(dir, "root")
		Expect(os.MkdirAll(filepath.Join(root, "etc"), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte("ID=test\nVERSION_ID=\"41.0\"\n"), 0o644)).To(Succeed())
		cmd := exec.Command(agentBin, "--enrolment-dir", dir, "--state-file", filepath.Join(dir, "seq"), "--interval", "1s",
			"--root", root, "--upgrade-timeout", "30s",
			"--upgrade-command", `printf 'ID=test\nVERSION_ID="%s"\n' "$ITMANAGER_TARGET_VERSION" > `+filepath.Join(root, "etc", "os-release"))
		session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { session.Kill() })
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		Eventually(func() string { return getDevice(d.Name).Status.Observed.OSVersion }).Should(Equal("41.0"))

		mw := window(label, nil)
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(d.Name) }).WithTimeout(20 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateSucceeded),
			HaveField("Window", mw.Name),
			HaveField("TargetVersion", "42.1"),
		))
		Expect(getDevice(d.Name).Status.Observed.OSVersion).To(Equal("42.1"))
		Eventually(windowStatus(mw.Name)).Should(HaveField("Devices", itmv1.UpgradeCounts{Succeeded: 1}))
		Eventually(conditionOf(d.Name, itmv1.DeviceConditionUpToDate)).Should(Equal(metav1.ConditionTrue))
	})
})
