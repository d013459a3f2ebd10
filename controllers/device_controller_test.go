package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
)

func createNode(name string) *corev1.Node {
	GinkgoHelper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	Expect(k8s.Create(ctx, node)).To(Succeed())
	node.Status = corev1.NodeStatus{
		NodeInfo: corev1.NodeSystemInfo{OSImage: "Debian GNU/Linux 12 (bookworm)", KubeletVersion: "v1.36.3"},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.0.2.10"},
			{Type: corev1.NodeHostName, Address: name},
		},
	}
	Expect(k8s.Status().Update(ctx, node)).To(Succeed())
	return node
}

var _ = Describe("Node discovery", func() {
	It("gives every Node a Device owned by it, whose facts follow the Node, and which goes with it", func() {
		node := createNode(uniqueName("worker"))
		devName := "node-" + node.Name

		Eventually(func(g Gomega) {
			d := &itmv1.Device{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Name: devName}, d)).To(Succeed())
			g.Expect(d.Spec.Class).To(Equal(itmv1.DeviceClassNode))
			g.Expect(d.Spec.NodeName).To(Equal(node.Name))
			g.Expect(d.OwnerReferences).To(ContainElement(HaveField("UID", node.UID)))
			g.Expect(d.Status.Observed).NotTo(BeNil())
			g.Expect(d.Status.Observed.OSVersion).To(Equal("Debian GNU/Linux 12 (bookworm)"))
			g.Expect(d.Status.Observed.Addresses).To(Equal([]string{"192.0.2.10"}))
			g.Expect(d.Status.Observed.Hostname).To(Equal(node.Name))
			g.Expect(d.Status.Phase).To(Equal(itmv1.DevicePhaseAvailable))
		}).Should(Succeed())
		Expect(conditionOf(devName, itmv1.DeviceConditionCheckedIn)()).To(Equal(metav1.ConditionFalse), "no Node Lease yet")

		By("keeping what users set on the Device")
		updateDevice(devName, func(d *itmv1.Device) {
			d.Labels = map[string]string{"itmanager.io/ring": "1"}
			d.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "12.8"}
		})

		By("following the os-version label")
		Expect(updateAs(k8s, node.Name, func(n *corev1.Node) { n.Labels = map[string]string{itmv1.LabelOSVersion: "12.8"} })).To(Succeed())
		Eventually(conditionOf(devName, itmv1.DeviceConditionUpToDate)).Should(Equal(metav1.ConditionTrue))
		d := getDevice(devName)
		Expect(d.Labels).To(HaveKeyWithValue("itmanager.io/ring", "1"))
		Expect(d.Spec.OS.TargetVersion).To(Equal("12.8"))

		By("reading check-ins from the Node's Lease in kube-node-lease")
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: controllers.NodeLeaseNamespace, Name: node.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node.Name), RenewTime: ptr.To(metav1.NewMicroTime(time.Now()))},
		}
		Expect(k8s.Create(ctx, lease)).To(Succeed())
		Eventually(conditionOf(devName, itmv1.DeviceConditionCheckedIn)).Should(Equal(metav1.ConditionTrue))
		Eventually(conditionOf(devName, itmv1.DeviceConditionCheckedIn)).WithTimeout(2 * staleAfter).Should(Equal(metav1.ConditionFalse))

		By("recreating a Device someone deleted")
		Expect(k8s.Delete(ctx, getDevice(devName))).To(Succeed())
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: devName}, &itmv1.Device{}) }).Should(Succeed())

		By("garbage-collecting the Device with its Node")
		Expect(k8s.Delete(ctx, node)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: devName}, &itmv1.Device{}))
		}).WithTimeout(30 * time.Second).Should(BeTrue())
	})
})

var _ = Describe("Device status", func() {
	It("derives the phase and is Ready without check-ins for a device without agent", func() {
		d := agentDevice(func(d *itmv1.Device) {
			d.Spec.Class, d.Spec.Agent, d.Spec.Assignee = itmv1.DeviceClassServer, nil, "jdoe"
			d.Spec.Addresses = []string{"10.1.0.1"}
		})
		Eventually(func() itmv1.DevicePhase { return getDevice(d.Name).Status.Phase }).Should(Equal(itmv1.DevicePhaseAssigned))
		Eventually(conditionOf(d.Name, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Expect(conditionOf(d.Name, itmv1.DeviceConditionCheckedIn)()).To(Equal(metav1.ConditionFalse))
		Expect(conditionOf(d.Name, itmv1.DeviceConditionUpToDate)()).To(Equal(metav1.ConditionFalse), "unknown version fails closed")

		updateDevice(d.Name, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })
		Eventually(func() itmv1.DevicePhase { return getDevice(d.Name).Status.Phase }).Should(Equal(itmv1.DevicePhaseRetired))
		Expect(getDevice(d.Name).Status.ObservedGeneration).To(Equal(getDevice(d.Name).Generation))
	})

	It("reports a static address claimed by two devices on both, and clears it when one lets go", func() {
		a := agentDevice(func(d *itmv1.Device) { d.Spec.Agent = nil; d.Spec.Addresses = []string{"10.9.9.9"} })
		b := agentDevice(func(d *itmv1.Device) { d.Spec.Agent = nil; d.Spec.Addresses = []string{"10.9.9.9", "10.9.9.10"} })
		// Devices without an agent are Ready until a conflict appears.
		for _, n := range []string{a.Name, b.Name} {
			Eventually(conditionOf(n, itmv1.ConditionReady)).Should(Equal(metav1.ConditionFalse))
		}
		Expect(getDevice(a.Name).Status.Conditions).To(ContainElement(HaveField("Message", ContainSubstring("10.9.9.9 (also claimed by "+b.Name+")"))))

		updateDevice(b.Name, func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.9.9.10"} })
		for _, n := range []string{a.Name, b.Name} {
			Eventually(conditionOf(n, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		}
	})
})
