//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/names"
)

// Node objects' annotation and Job labels (controllers/nodeupgrade.go).
const (
	annotationCordonedBy = "itmanager.io/cordoned-by"
	labelWindow          = "itmanager.io/maintenance-window"
)

// alwaysOpen is a schedule whose window is open now: one starts every
// minute and lasts an hour.
var alwaysOpen = []itmv1.Window{{Schedule: "* * * * *", Duration: metav1.Duration{Duration: time.Hour}}}

func nodeUpgradeSpecs() {
	Describe("A real node upgrade", func() {
		It("cordons the node, is held by a PodDisruptionBudget and says so in blockedBy, then evicts, runs the upgrade Job privileged on the node (marker on the host), moves the version label, and uncordons with the Device UpToDate and the Pods back; itmanager's own Pods, labelled itmanager.io/drain=skip by the chart, keep running", func() {
			node, device := nodeDevice("1.0", "2.0")
			managersBefore := podUIDs(managerPods())

			By("a Deployment on the node with a PodDisruptionBudget of minAvailable = replicas")
			ns := newNamespace("e2e-web")
			web := webDeployment(ns, 2)
			pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: ptr.To(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
			Expect(k8s.Create(ctx, pdb)).To(Succeed())
			Eventually(func() int32 {
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb)
				return pdb.Status.CurrentHealthy
			}).Should(BeEquivalentTo(2))

			marker := filepath.Join("/var/lib/itmanager-e2e", uniqueName("upgraded"))
			DeferCleanup(func() { _ = os.Remove(marker) })
			nodeRec := record(&corev1.NodeList{}, client.MatchingFields{"metadata.name": node})
			mw := nodeWindow(device, "--marker=/host"+marker)
			started := time.Now()

			By("the node cordoned by itmanager and the drain held by the budget, named in blockedBy")
			Eventually(func(g Gomega) {
				n := getNode(node)
				g.Expect(n.Spec.Unschedulable).To(BeTrue())
				g.Expect(n.Annotations).To(HaveKey(annotationCordonedBy))
			}).Should(Succeed())
			Eventually(func() string {
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(mw), mw)
				return mw.Status.BlockedBy
			}).Should(ContainSubstring(fmt.Sprintf("eviction refused by PodDisruptionBudget %s/web", ns)))
			Expect(upgradeOf(device).State).To(Equal(itmv1.UpgradeStateInProgress))
			Expect(upgradeOf(device).Message).To(ContainSubstring("draining"))

			By("relaxing the budget: the Pods are evicted and the upgrade Job runs privileged on the node")
			Eventually(func() error {
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(pdb), pdb); err != nil {
					return err
				}
				pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(0))
				return k8s.Update(ctx, pdb)
			}).Should(Succeed())
			upgradeEnds(device, mw.Name, itmv1.UpgradeStateSucceeded)
			figures.nodeUpgrade = fmt.Sprintf("window created → Device Succeeded and node uncordoned in %s (drain held by the PDB until it was relaxed)", time.Since(started).Round(time.Second))

			job := upgradeJob(mw.Name)
			Expect(job.Status.Succeeded).To(BeEquivalentTo(1))
			pod := jobPod(job)
			Expect(pod.Spec.NodeName).To(Equal(node))
			Expect(pod.Spec.HostPID).To(BeTrue())
			Expect(pod.Spec.Containers[0].SecurityContext.Privileged).To(HaveValue(BeTrue()))
			Expect(pod.Status.Phase).To(Equal(corev1.PodSucceeded))
			b, err := os.ReadFile(marker)
			Expect(err).NotTo(HaveOccurred(), "the upgrade image's marker on the node's filesystem")
			Expect(string(b)).To(ContainSubstring("version=2.0"))

			By("the version label moved, the Device UpToDate, the node uncordoned, the Pods back")
			Expect(getNode(node).Labels).To(HaveKeyWithValue(itmv1.LabelOSVersion, "2.0"))
			Eventually(func(g Gomega) {
				d := getDevice(device)
				g.Expect(d.Status.Observed).NotTo(BeNil())
				g.Expect(d.Status.Observed.OSVersion).To(Equal("2.0"))
				g.Expect(conditionTrue(d.Status.Conditions, itmv1.DeviceConditionUpToDate)).To(BeTrue())
			}).Should(Succeed())
			Eventually(func(g Gomega) {
				n := getNode(node)
				g.Expect(n.Spec.Unschedulable).To(BeFalse())
				g.Expect(n.Annotations).NotTo(HaveKey(annotationCordonedBy))
			}).Should(Succeed())
			waitAvailable(client.ObjectKeyFromObject(web), 2)
			cordons, _ := states(nodeRec, func(n *corev1.Node) string { return strconv.FormatBool(n.Spec.Unschedulable) }, func(*corev1.Node) bool { return false })
			Expect(cordons[node]).To(Equal([]string{"false", "true", "false"}), "cordoned once, uncordoned once")
			Expect(podUIDs(managerPods())).To(Equal(managersBefore), "itmanager's own Pods were not evicted")
		})

		It("never uncordons a node someone else cordoned: the upgrade runs and succeeds, and the node stays cordoned", func() {
			node, device := nodeDevice("2.0", "3.0")
			setUnschedulable(node, true)
			DeferCleanup(func() { setUnschedulable(node, false) })
			marker := filepath.Join("/var/lib/itmanager-e2e", uniqueName("upgraded"))
			DeferCleanup(func() { _ = os.Remove(marker) })
			mw := nodeWindow(device, "--marker=/host"+marker)
			upgradeEnds(device, mw.Name, itmv1.UpgradeStateSucceeded)
			Expect(marker).To(BeAnExistingFile())
			Expect(getNode(node).Labels).To(HaveKeyWithValue(itmv1.LabelOSVersion, "3.0"))
			n := getNode(node)
			Expect(n.Spec.Unschedulable).To(BeTrue(), "still cordoned by its owner")
			Expect(n.Annotations).NotTo(HaveKey(annotationCordonedBy))
		})

		It("fails the device on a failing upgrade image, halts the rollout at maxFailures and leaves the node cordoned with the reason in the Device's status and the window's blockedBy", func() {
			node, device := nodeDevice("3.0", "4.0")
			mw := nodeWindow(device, "--fail")
			DeferCleanup(func() {
				setUnschedulable(node, false)
				n := getNode(node)
				if _, ok := n.Annotations[annotationCordonedBy]; ok {
					patch := client.MergeFrom(n.DeepCopy())
					delete(n.Annotations, annotationCordonedBy)
					Expect(k8s.Patch(ctx, n, patch)).To(Succeed())
				}
			})
			upgradeEnds(device, mw.Name, itmv1.UpgradeStateFailed)
			u := upgradeOf(device)
			Expect(u.Message).To(And(ContainSubstring("upgrade Job"), ContainSubstring("failed"), ContainSubstring("left cordoned for inspection"),
				ContainSubstring("the upgrade container said: upgrade failed: the e2e upgrade image was told to fail")))
			Eventually(func(g Gomega) {
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mw), mw)).To(Succeed())
				g.Expect(mw.Status.Devices.Failed).To(BeEquivalentTo(1))
				g.Expect(mw.Status.BlockedBy).To(And(HavePrefix("failure budget: 1 failed in this window"), ContainSubstring("; last: "+device+": "),
					ContainSubstring("the e2e upgrade image was told to fail")), "the window names the failed device and why")
			}).Should(Succeed())
			AddReportEntry("failed upgrade", fmt.Sprintf("device message %q; window blockedBy %q", u.Message, mw.Status.BlockedBy))
			n := getNode(node)
			Expect(n.Spec.Unschedulable).To(BeTrue(), "left cordoned for inspection")
			Expect(n.Annotations).To(HaveKey(annotationCordonedBy))
			Expect(n.Labels).To(HaveKeyWithValue(itmv1.LabelOSVersion, "3.0"), "the version did not move")
		})
	})
}

// nodeDevice labels the node with OS version from and its Device (Node
// discovery's node-<node>) with a label of the spec and target version to;
// both are restored when the spec ends. It returns the node and Device.
func nodeDevice(from, to string) (string, string) {
	GinkgoHelper()
	node := cluster["NODE_NAME"]
	device := names.NodeDevice(node)
	Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: device}, &itmv1.Device{}) }).Should(Succeed(), "Node discovery's Device %s", device)
	n := getNode(node)
	patch := client.MergeFrom(n.DeepCopy())
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels[itmv1.LabelOSVersion] = from
	Expect(k8s.Patch(ctx, n, patch)).To(Succeed())
	DeferCleanup(func() {
		n := getNode(node)
		patch := client.MergeFrom(n.DeepCopy())
		delete(n.Labels, itmv1.LabelOSVersion)
		Expect(k8s.Patch(ctx, n, patch)).To(Succeed())
	})
	group := uniqueName("nodes")
	updateDevice(device, func(d *itmv1.Device) {
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		d.Labels["e2e-nodes"] = group
		d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: to}
	})
	DeferCleanup(func() {
		updateDevice(device, func(d *itmv1.Device) {
			delete(d.Labels, "e2e-nodes")
			d.Spec.OS = nil
		})
	})
	Eventually(func(g Gomega) {
		d := getDevice(device)
		g.Expect(conditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)).To(BeTrue(), "CheckedIn")
		g.Expect(d.Status.Observed).NotTo(BeNil())
		g.Expect(d.Status.Observed.OSVersion).To(Equal(from))
	}).Should(Succeed(), "Device %s observed at %s", device, from)
	return node, device
}

// nodeWindow is an always-open MaintenanceWindow selecting the Device,
// upgrading with the e2e upgrade image and args, one at a time, failing at
// the first failure; deleted (and its Jobs with it) when the spec ends.
func nodeWindow(device string, args ...string) *itmv1.MaintenanceWindow {
	GinkgoHelper()
	mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("node")}, Spec: itmv1.MaintenanceWindowSpec{
		Selector:    metav1.LabelSelector{MatchLabels: map[string]string{"e2e-nodes": getDevice(device).Labels["e2e-nodes"]}},
		Windows:     alwaysOpen,
		Rollout:     itmv1.Rollout{MaxUnavailable: ptr.To(intstr.FromInt32(1)), MaxFailures: ptr.To[int32](1), UpgradeTimeout: &metav1.Duration{Duration: 10 * time.Minute}},
		Drain:       itmv1.Drain{Timeout: &metav1.Duration{Duration: 10 * time.Minute}},
		NodeUpgrade: &itmv1.NodeUpgrade{Image: upgradeImage, Args: args},
	}}
	Expect(k8s.Create(ctx, mw)).To(Succeed())
	DeferCleanup(func() { deleteAndWait(mw) })
	return mw
}

func getNode(name string) *corev1.Node {
	GinkgoHelper()
	n := &corev1.Node{}
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, n)).To(Succeed())
	return n
}

func setUnschedulable(name string, on bool) {
	GinkgoHelper()
	n := getNode(name)
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Unschedulable = on
	Expect(k8s.Patch(ctx, n, patch)).To(Succeed())
}

// upgradeEnds waits until the device's upgrade under window (to its
// current target) ended in state; an earlier window's result does not count.
func upgradeEnds(device, window string, state itmv1.UpgradeState) {
	GinkgoHelper()
	target := getDevice(device).Spec.OS.TargetVersion
	Eventually(func(g Gomega) {
		u := upgradeOf(device)
		g.Expect(u.Window).To(Equal(window))
		g.Expect(u.TargetVersion).To(Equal(target))
		g.Expect(u.State).To(Equal(state))
	}).WithTimeout(5*time.Minute).Should(Succeed(), func() string { return fmt.Sprintf("Device %s: %+v", device, upgradeOf(device)) })
}

func upgradeOf(device string) itmv1.UpgradeStatus {
	if u := getDevice(device).Status.Upgrade; u != nil {
		return *u
	}
	return itmv1.UpgradeStatus{}
}

func upgradeJob(window string) *batchv1.Job {
	GinkgoHelper()
	jobs := &batchv1.JobList{}
	Expect(k8s.List(ctx, jobs, client.InNamespace(upgradesNS), client.MatchingLabels{labelWindow: window})).To(Succeed())
	Expect(jobs.Items).To(HaveLen(1), "one upgrade Job of window %s", window)
	return &jobs.Items[0]
}

func jobPod(job *batchv1.Job) *corev1.Pod {
	GinkgoHelper()
	pods := &corev1.PodList{}
	Expect(k8s.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{"batch.kubernetes.io/job-name": job.Name})).To(Succeed())
	Expect(pods.Items).To(HaveLen(1), "the Pod of Job %s", job.Name)
	return &pods.Items[0]
}

func podUIDs(pods []corev1.Pod) []types.UID {
	var out []types.UID
	for _, p := range pods {
		out = append(out, p.UID)
	}
	return out
}

// webDeployment runs replicas probe servers, Available, in namespace.
func webDeployment(namespace string, replicas int32) *appsv1.Deployment {
	GinkgoHelper()
	labels := map[string]string{"app": "web"}
	tmpl := probePod(namespace, "", []string{"serve", "--listen=:" + strconv.Itoa(servePort)}, labels)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: tmpl.Spec},
	}}
	Expect(k8s.Create(ctx, d)).To(Succeed())
	waitAvailable(client.ObjectKeyFromObject(d), replicas)
	return d
}
