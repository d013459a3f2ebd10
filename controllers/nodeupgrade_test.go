package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// kubelet simulates what a node's kubelet does for these tests: it renews
// the node's Lease, finishes deleting evicted pods, runs the upgrade Job's
// pod to success (or failure) and then reports the new OS version. With
// report set, the upgrade container's termination message is report and
// the node does not label itself: the Job's report is all there is.
type kubelet struct {
	node    string
	failJob bool
	report  string
	// hold keeps the upgrade Job's pod pending (the Job running) while set.
	hold atomic.Bool
}

func (k *kubelet) run(c context.Context) {
	defer GinkgoRecover()
	for c.Err() == nil {
		// The Lease: the Node device's check-in.
		lease := &coordinationv1.Lease{}
		key := types.NamespacedName{Namespace: device.NodeLeaseNamespace, Name: k.node}
		now := metav1.NewMicroTime(time.Now())
		if err := k8s.Get(c, key, lease); apierrors.IsNotFound(err) {
			_ = k8s.Create(c, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(k.node), RenewTime: &now}})
		} else if err == nil {
			lease.Spec.RenewTime = &now
			_ = k8s.Update(c, lease)
		}
		pods := &corev1.PodList{}
		_ = k8s.List(c, pods, client.MatchingFields{"spec.nodeName": k.node})
		for i := range pods.Items {
			p := &pods.Items[i]
			switch {
			case p.DeletionTimestamp != nil:
				_ = k8s.Delete(c, p, client.GracePeriodSeconds(0))
			case p.Labels[controllers.LabelUpgradeDevice] != "" && (p.Status.Phase == "" || p.Status.Phase == corev1.PodPending):
				if k.hold.Load() {
					break
				}
				p.Status.Phase = corev1.PodSucceeded
				exit := int32(0)
				if k.failJob {
					p.Status.Phase, exit = corev1.PodFailed, 1
				}
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{
					Name: controllers.UpgradeContainer, Image: p.Spec.Containers[0].Image,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Message: k.report}},
				}}
				_ = k8s.Status().Update(c, p)
				if !k.failJob && k.report == "" {
					k.setVersion(c, "2.0")
				}
			case p.Status.Phase == "" || p.Status.Phase == corev1.PodPending:
				// A workload pod starts and becomes ready: now a budget
				// protects it (a pending pod is always evictable).
				p.Status.Phase = corev1.PodRunning
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
				_ = k8s.Status().Update(c, p)
			}
		}
		select {
		case <-c.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (k *kubelet) setVersion(c context.Context, v string) {
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n := &corev1.Node{}
		if err := k8s.Get(c, types.NamespacedName{Name: k.node}, n); err != nil {
			return err
		}
		n.Labels["itmanager.io/os-version"] = v
		return k8s.Update(c, n)
	})
}

func getNode(name string) *corev1.Node {
	n := &corev1.Node{}
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, n)).To(Succeed())
	return n
}

// nodeWithWorkload creates a Node running version 1.0 with a simulated
// kubelet, its Device targeting 2.0, and a ReplicaSet-owned pod on it.
func nodeWithWorkload(label map[string]string, k *kubelet, precordoned bool) (*corev1.Node, *itmv1.Device, *corev1.Pod) {
	GinkgoHelper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("worker"), Labels: map[string]string{"itmanager.io/os-version": "1.0"}},
		Spec:       corev1.NodeSpec{Unschedulable: precordoned},
	}
	Expect(k8s.Create(ctx, node)).To(Succeed())
	DeferCleanup(func() { _ = k8s.Delete(ctx, node) })
	k.node = node.Name
	c, cancel := context.WithCancel(ctx)
	DeferCleanup(cancel)
	go k.run(c)

	devName := names.NodeDevice(node.Name)
	Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: devName}, &itmv1.Device{}) }).Should(Succeed())
	updateDevice(devName, func(d *itmv1.Device) {
		d.Labels = label
		d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
	})
	Eventually(conditionOf(devName, itmv1.DeviceConditionCheckedIn)).WithTimeout(5 * time.Second).Should(Equal(metav1.ConditionTrue))

	ns := newNamespace(nil)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
	Expect(k8s.Create(ctx, rs)).To(Succeed())
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: node.Name, Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func() corev1.PodPhase {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return pod.Status.Phase
	}).Should(Equal(corev1.PodRunning))
	return node, getDevice(devName), pod
}

func nodeWindow(label map[string]string) *itmv1.MaintenanceWindow {
	return window(label, func(mw *itmv1.MaintenanceWindow) {
		mw.Spec.NodeUpgrade = &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1", Command: []string{"/upgrade"}}
		mw.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	})
}

var _ = Describe("MaintenanceWindow rollout of Node devices", func() {
	It("cordons, waits on a PodDisruptionBudget and says so, drains, runs the Job on the node, and uncordons", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, false)
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: "web"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		}
		Expect(k8s.Create(ctx, pdb)).To(Succeed())

		mw := nodeWindow(label)
		Eventually(func() bool { return getNode(node.Name).Spec.Unschedulable }).Should(BeTrue())
		Expect(getNode(node.Name).Annotations).To(HaveKeyWithValue(controllers.AnnotationCordonedBy, mw.Name))
		Eventually(windowStatus(mw.Name)).WithTimeout(5 * time.Second).Should(HaveField("BlockedBy",
			"pod "+pod.Namespace+"/web-1: eviction refused by PodDisruptionBudget "+pod.Namespace+"/web"))
		Expect(upgradeOf(dev.Name).Message).To(ContainSubstring("draining: 1 pods remain"))
		jobs := &batchv1.JobList{}
		Expect(k8s.List(ctx, jobs, client.InNamespace(testenv.UpgradesNamespace), client.MatchingLabels{controllers.LabelUpgradeDevice: dev.Name})).To(Succeed())
		Expect(jobs.Items).To(BeEmpty(), "no upgrade before the node is drained")

		By("the budget allowing it: the pod is evicted, the Job runs on the node, the node comes back upgraded")
		Expect(k8s.Delete(ctx, pdb)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}))
		}).WithTimeout(10 * time.Second).Should(BeTrue())
		Eventually(func() itmv1.UpgradeState { return upgradeOf(dev.Name).State }).WithTimeout(30 * time.Second).Should(Equal(itmv1.UpgradeStateSucceeded))
		Expect(k8s.List(ctx, jobs, client.InNamespace(testenv.UpgradesNamespace), client.MatchingLabels{controllers.LabelUpgradeDevice: dev.Name})).To(Succeed())
		Expect(jobs.Items).To(HaveLen(1))
		job := jobs.Items[0]
		Expect(job.Spec.Template.Spec.NodeName).To(Equal(node.Name))
		Expect(job.Spec.Template.Spec.Tolerations).To(ContainElement(corev1.Toleration{Operator: corev1.TolerationOpExists}))
		Expect(job.Spec.Template.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: "TARGET_VERSION", Value: "2.0"}))
		for _, ns := range []string{testenv.OperatorNamespace, testenv.DevicesNamespace} {
			Expect(k8s.List(ctx, jobs, client.InNamespace(ns), client.MatchingLabels{controllers.LabelUpgradeDevice: dev.Name})).To(Succeed())
			Expect(jobs.Items).To(BeEmpty(), "upgrade Jobs run only in the upgrades namespace, not in %s", ns)
		}
		// Uncordoned and unmarked, seen together: itmanager drops both in one
		// apply (one CI run saw the node uncordoned with the mark still on
		// when they were read one after the other).
		Eventually(func() *corev1.Node { return getNode(node.Name) }).Should(And(
			HaveField("Spec.Unschedulable", BeFalse()),
			HaveField("ObjectMeta.Annotations", Not(HaveKey(controllers.AnnotationCordonedBy)))))
		Eventually(windowStatus(mw.Name)).Should(HaveField("Devices", itmv1.UpgradeCounts{Succeeded: 1}))
	})

	It("fails the device when the Job fails, and leaves a node someone else cordoned cordoned, never marked nor uncordoned (from a watch)", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{failJob: true, report: "upgrade failed: /boot is full\n"}
		node, dev, _ := nodeWithWorkload(label, k, true)
		cordons := watchCordon(node.Name)
		mw := nodeWindow(label)
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(30 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", ContainSubstring("upgrade Job itm-upgrade-"+dev.Name+"-1 failed")),
			HaveField("Message", ContainSubstring("the upgrade container said: upgrade failed: /boot is full;")),
		))
		cordons.expectOnly(node.Name, "unschedulable=true mark=false")
		Eventually(windowStatus(mw.Name)).Should(And(
			HaveField("Devices", itmv1.UpgradeCounts{Failed: 1}),
			HaveField("BlockedBy", HavePrefix("failure budget: 1 failed in this window (maxFailures 1); last: "+dev.Name+": upgrade Job itm-upgrade-"+dev.Name+"-1 failed")),
			HaveField("BlockedBy", ContainSubstring("/boot is full")),
		))
	})

	It("resumes an upgrade a previous operator left cordoned and drained before it created the Job: creates the Job of the same attempt, and uncordons the node it cordoned", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Delete(ctx, pod)).To(Succeed()) // already drained
		name := uniqueName("mw")

		By("the state a stopped operator left: node cordoned by it, the device InProgress and drained")
		cordon := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"unschedulable": true}}}
		cordon.SetAPIVersion("v1")
		cordon.SetKind("Node")
		cordon.SetName(node.Name)
		cordon.SetAnnotations(map[string]string{controllers.AnnotationCordonedBy: name})
		Expect(k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(cordon), client.FieldOwner(controllers.CordonFieldManager))).To(Succeed())
		d := getDevice(dev.Name)
		d.Status.Upgrade = &itmv1.UpgradeStatus{State: itmv1.UpgradeStateInProgress, TargetVersion: "2.0", Window: name,
			Attempts: 1, StartedAt: &metav1.Time{Time: time.Now()}, Message: "drained; upgrade Job started"}
		Expect(k8s.Status().Update(ctx, d)).To(Succeed())

		mw := &itmv1.MaintenanceWindow{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: itmv1.MaintenanceWindowSpec{
				Selector:    metav1.LabelSelector{MatchLabels: label},
				Windows:     []itmv1.Window{{Schedule: "* * * * *", Duration: metav1.Duration{Duration: time.Hour}}},
				NodeUpgrade: &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1"},
				// Paused: nothing new starts; what is under way finishes.
				Paused: true,
			},
		}
		Expect(k8s.Create(ctx, mw)).To(Succeed())

		Eventually(func() itmv1.UpgradeState { return upgradeOf(dev.Name).State }).WithTimeout(30 * time.Second).Should(Equal(itmv1.UpgradeStateSucceeded))
		jobs := &batchv1.JobList{}
		Expect(k8s.List(ctx, jobs, client.InNamespace(testenv.UpgradesNamespace), client.MatchingLabels{controllers.LabelUpgradeDevice: dev.Name})).To(Succeed())
		Expect(jobs.Items).To(HaveLen(1))
		Expect(jobs.Items[0].Name).To(Equal("itm-upgrade-" + dev.Name + "-1"))
		Expect(upgradeOf(dev.Name).Attempts).To(BeEquivalentTo(1))
		Eventually(func() bool { return getNode(node.Name).Spec.Unschedulable }).Should(BeFalse(), "it cordoned the node, so it uncordons it")
	})

	It("fails the device at drain.timeout without forcing anything, and uncordons the node it cordoned", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: "web"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		})).To(Succeed())
		window(label, func(mw *itmv1.MaintenanceWindow) {
			mw.Spec.NodeUpgrade = &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1"}
			mw.Spec.Drain.Timeout = &metav1.Duration{Duration: 3 * time.Second}
		})
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(20 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", ContainSubstring("drain did not finish within 3s: pod "+pod.Namespace+"/web-1: eviction refused by PodDisruptionBudget")),
		))
		Eventually(func() bool { return getNode(node.Name).Spec.Unschedulable }).Should(BeFalse())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		Expect(pod.DeletionTimestamp).To(BeNil(), "never forced")
	})
	It("runs the upgrade Job's pod in the upgrades namespace on the node, as itmanager-node-upgrade without a token, privileged, hostPID, with the host's root at /host", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		nodeWindow(label)
		Eventually(func() itmv1.UpgradeState { return upgradeOf(dev.Name).State }).WithTimeout(30 * time.Second).Should(Equal(itmv1.UpgradeStateSucceeded))

		// The pod the Job controller created (no kubelet runs it): what the
		// API server admitted, not only the template itmanager wrote.
		pods := &corev1.PodList{}
		Expect(k8s.List(ctx, pods, client.MatchingLabels{controllers.LabelUpgradeDevice: dev.Name})).To(Succeed())
		Expect(pods.Items).To(HaveLen(1))
		p := pods.Items[0]
		Expect(p.Namespace).To(Equal(testenv.UpgradesNamespace))
		Expect(p.Spec.NodeName).To(Equal(node.Name))
		Expect(p.Spec.ServiceAccountName).To(Equal(testenv.NodeUpgradeServiceAccount))
		Expect(p.Spec.AutomountServiceAccountToken).To(Equal(ptr.To(false)))
		Expect(p.Spec.HostPID).To(BeTrue())
		for _, v := range p.Spec.Volumes {
			Expect(v.Projected).To(BeNil(), "no ServiceAccount token volume: %s", v.Name)
		}
		Expect(p.Spec.Volumes).To(ContainElement(corev1.Volume{Name: "host-root", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: "/", Type: ptr.To(corev1.HostPathDirectory)}}}))
		Expect(p.Spec.Containers).To(HaveLen(1))
		c := p.Spec.Containers[0]
		Expect(c.Image).To(Equal("registry.example/os-upgrader:1"))
		Expect(c.SecurityContext).NotTo(BeNil())
		Expect(c.SecurityContext.Privileged).To(Equal(ptr.To(true)))
		Expect(c.VolumeMounts).To(ConsistOf(corev1.VolumeMount{Name: "host-root", MountPath: "/host"}))
		Expect(c.TerminationMessagePolicy).To(Equal(corev1.TerminationMessageFallbackToLogsOnError))

		ns := &corev1.Namespace{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: testenv.UpgradesNamespace}, ns)).To(Succeed())
		Expect(ns.Labels).To(And(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "privileged"),
			HaveKeyWithValue("pod-security.kubernetes.io/audit", "privileged"), HaveKeyWithValue("pod-security.kubernetes.io/warn", "privileged")))
	})

	It("labels the Node with the version the Job reported in its termination message, which completes the upgrade", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{report: "itmanager.io/os-version=2.0\n"}
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		nodeWindow(label)
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(30 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateSucceeded), HaveField("Message", "upgraded to 2.0")))
		Expect(getNode(node.Name).Labels).To(HaveKeyWithValue(itmv1.LabelOSVersion, "2.0"))
		Expect(getDevice(dev.Name).Status.Observed.OSVersion).To(Equal("2.0"))
		Eventually(func() bool { return getNode(node.Name).Spec.Unschedulable }).Should(BeFalse())
	})

	It("refuses a termination message that is not a version report: the Node label stays, the device fails, the node stays cordoned", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{report: "itmanager.io/os-version=2.0; rm -rf /"}
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		nodeWindow(label)
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(30 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", And(
				ContainSubstring("upgrade Job itm-upgrade-"+dev.Name+"-1 succeeded but its version report was refused: the reported version is not a valid label value"),
				Not(ContainSubstring("rm -rf")))),
		))
		n := getNode(node.Name)
		Expect(n.Labels).To(HaveKeyWithValue(itmv1.LabelOSVersion, "1.0"), "garbage never becomes the Node's label")
		Expect(n.Spec.Unschedulable).To(BeTrue(), "left cordoned for inspection")
		Expect(n.Annotations).To(HaveKey(controllers.AnnotationCordonedBy))
	})
})

// cordonState summarizes a Node's cordon, after its resourceVersion.
func cordonState(o client.Object) string {
	n := o.(*corev1.Node)
	_, mark := n.Annotations[controllers.AnnotationCordonedBy]
	return fmt.Sprintf("%s unschedulable=%t mark=%t", n.ResourceVersion, n.Spec.Unschedulable, mark)
}

// watchCordon records every version of the Node's cordon from now on.
func watchCordon(node string) *cordonRecord {
	GinkgoHelper()
	return &cordonRecord{watchHistory(&corev1.NodeList{}, "", node, cordonState)}
}

type cordonRecord struct{ h *history }

// expectOnly waits until the watch delivered the Node's current version,
// then checks that every version it delivered had the cordon want.
func (c *cordonRecord) expectOnly(node, want string) {
	GinkgoHelper()
	rv := getNode(node).ResourceVersion
	Eventually(func() bool {
		return slices.ContainsFunc(c.h.record(), func(e seen) bool { return strings.HasPrefix(e.state, rv+" ") })
	}).Should(BeTrue(), "the watch delivers Node %s's version %s", node, rv)
	for _, e := range c.h.record() {
		_, state, _ := strings.Cut(e.state, " ")
		Expect(state).To(Equal(want), "every version of Node %s:\n%s", node, c.h)
	}
}

// jobRecord is every upgrade Job of one device added or deleted, from a
// watch, and the last resourceVersion it delivered.
type jobRecord struct {
	mu      sync.Mutex
	added   []string
	deleted []string
	rvs     map[string]bool
	ended   bool
}

func watchJobs(device string) *jobRecord {
	GinkgoHelper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	wctx, stop := context.WithCancel(ctx)
	w, err := wc.Watch(wctx, &batchv1.JobList{}, client.InNamespace(testenv.UpgradesNamespace), client.MatchingLabels{controllers.LabelUpgradeDevice: device})
	Expect(err).NotTo(HaveOccurred())
	rec := &jobRecord{rvs: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			j, ok := ev.Object.(*batchv1.Job)
			rec.mu.Lock()
			if ok {
				rec.rvs[j.ResourceVersion] = true
			}
			switch {
			case ev.Type == watch.Added && ok:
				rec.added = append(rec.added, j.Name)
			case ev.Type == watch.Deleted && ok:
				rec.deleted = append(rec.deleted, j.Name)
			case ev.Type == watch.Error:
				rec.ended = true
			}
			rec.mu.Unlock()
		}
		rec.mu.Lock()
		rec.ended = rec.ended || wctx.Err() == nil
		rec.mu.Unlock()
	}()
	DeferCleanup(func() {
		stop()
		w.Stop()
		<-done
	})
	return rec
}

func (r *jobRecord) created() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	Expect(r.ended).To(BeFalse(), "the Job watch ended early: the record is incomplete")
	return slices.Clone(r.added)
}

// expectOnly waits until the watch delivered job's current version, then
// checks that it is the one Job ever created for the device and none was
// deleted.
func (r *jobRecord) expectOnly(job string) {
	GinkgoHelper()
	j := &batchv1.Job{}
	Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.UpgradesNamespace, Name: job}, j)).To(Succeed())
	Eventually(func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.rvs[j.ResourceVersion]
	}).Should(BeTrue(), "the watch delivers Job %s's version %s", job, j.ResourceVersion)
	Expect(r.created()).To(Equal([]string{job}), "one Job created, once")
	r.mu.Lock()
	defer r.mu.Unlock()
	Expect(r.deleted).To(BeEmpty())
}

// freshReconcile runs one pass of a newly built MaintenanceWindow
// reconciler, as a restarted operator's first pass: nothing remembered,
// everything read from the API server.
func freshReconcile(window string) error {
	r := &controllers.MaintenanceWindowReconciler{Client: k8s, APIReader: k8s, Clock: mwClock,
		UpgradesNamespace: testenv.UpgradesNamespace, DrainPoll: 300 * time.Millisecond}
	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: window}})
	return err
}

var _ = Describe("MaintenanceWindow rollout of Node devices: the cordon and the Job", func() {
	It("creates the upgrade Job once and never a second while it runs: across the manager's passes, a pass after a crash before the step was recorded, and freshly started reconcilers (from a watch)", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		k.hold.Store(true)
		node, dev, pod := nodeWithWorkload(label, k, false)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		jobs := watchJobs(dev.Name)
		mw := nodeWindow(label)
		job := "itm-upgrade-" + dev.Name + "-1"
		running := "upgrade Job " + job + " running"

		By("itmanager creating the first Job, and passing over it while it runs")
		Eventually(jobs.created).WithTimeout(20 * time.Second).Should(Equal([]string{job}))
		Eventually(func() string { return upgradeOf(dev.Name).Message }).WithTimeout(10 * time.Second).Should(Equal(running))

		By("freshly started reconcilers, each a restarted operator's first pass")
		for range 3 {
			Eventually(func() error { return freshReconcile(mw.Name) }).Should(Succeed())
		}

		By("the state a crash right after creating the Job leaves: the device still says cordoning")
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d := getDevice(dev.Name)
			d.Status.Upgrade.Message = "cordoning"
			return k8s.Status().Update(ctx, d)
		})).To(Succeed())
		Eventually(func() error { return freshReconcile(mw.Name) }).Should(Succeed())
		Eventually(func() string { return upgradeOf(dev.Name).Message }).Should(Equal(running), "the step finds the Job it made")

		By("the Job finishing")
		k.hold.Store(false)
		Eventually(func() itmv1.UpgradeState { return upgradeOf(dev.Name).State }).WithTimeout(30 * time.Second).Should(Equal(itmv1.UpgradeStateSucceeded))
		Eventually(func() error { return freshReconcile(mw.Name) }).Should(Succeed())
		jobs.expectOnly(job)
		Expect(upgradeOf(dev.Name).Attempts).To(BeEquivalentTo(1))
		Eventually(func() bool { return getNode(node.Name).Spec.Unschedulable }).Should(BeFalse(), "it cordoned the node, so it uncordons it")
	})

	It("after a successful upgrade, a node someone else cordoned is still cordoned, never marked nor uncordoned (from a watch)", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, true)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		cordons := watchCordon(node.Name)
		nodeWindow(label)
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(30 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateSucceeded), HaveField("Message", "upgraded to 2.0")))
		cordons.expectOnly(node.Name, "unschedulable=true mark=false")
	})

	It("after a drain timeout, a node someone else cordoned is still cordoned, never marked nor uncordoned (from a watch)", func() {
		label := map[string]string{"pool": uniqueName("p")}
		k := &kubelet{}
		node, dev, pod := nodeWithWorkload(label, k, true)
		Expect(k8s.Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: "web"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
		})).To(Succeed())
		cordons := watchCordon(node.Name)
		window(label, func(mw *itmv1.MaintenanceWindow) {
			mw.Spec.NodeUpgrade = &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1"}
			mw.Spec.Drain.Timeout = &metav1.Duration{Duration: 3 * time.Second}
		})
		Eventually(func() itmv1.UpgradeStatus { return upgradeOf(dev.Name) }).WithTimeout(20 * time.Second).Should(And(
			HaveField("State", itmv1.UpgradeStateFailed),
			HaveField("Message", ContainSubstring("drain did not finish within 3s: pod "+pod.Namespace+"/web-1: eviction refused by PodDisruptionBudget")),
		))
		cordons.expectOnly(node.Name, "unschedulable=true mark=false")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		Expect(pod.DeletionTimestamp).To(BeNil(), "never forced")
	})
})
