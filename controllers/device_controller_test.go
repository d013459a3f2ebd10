package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
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
			ObjectMeta: metav1.ObjectMeta{Namespace: device.NodeLeaseNamespace, Name: node.Name},
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

var _ = Describe("Node discovery field ownership", func() {
	It("owns only spec.class, spec.nodeName, its label and owner reference: a user's server-side apply of spec.lifecycle does not conflict", func() {
		node := createNode(uniqueName("worker"))
		devName := "node-" + node.Name
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: devName}, &itmv1.Device{}) }).Should(Succeed())
		u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
			"class": "Node", "nodeName": node.Name, "lifecycle": "Retired",
		}}}
		u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("Device"))
		u.SetName(devName)
		Eventually(func() error {
			return k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner("gitops"))
		}).Should(Succeed())
		Expect(getDevice(devName).Spec.Lifecycle).To(Equal(itmv1.DeviceLifecycleRetired))
		Expect(k8s.Delete(ctx, node)).To(Succeed())
	})
})

var _ = Describe("Node discovery conflicts", func() {
	It("never adopts a hand-made Laptop named node-<x>: leaves it untouched, reports it while it lasts, and creates the Node's Device once the name is free", func() {
		nodeName := uniqueName("worker")
		devName := "node-" + nodeName
		person := uniqueName("judy")
		laptop := &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: devName, Labels: map[string]string{"team": "payments"}},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: person, Addresses: []string{"10.50.0.1"},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux}},
		}
		Expect(k8s.Create(ctx, laptop)).To(Succeed())
		// A Node-class Device under another name that merely names the Node.
		mirror := &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("mirror")},
			Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassNode, NodeName: nodeName},
		}
		Expect(k8s.Create(ctx, mirror)).To(Succeed())

		node := createNode(nodeName)
		Expect(k8s.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: device.NodeLeaseNamespace, Name: node.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node.Name), RenewTime: ptr.To(metav1.NewMicroTime(time.Now()))},
		})).To(Succeed())

		By("reporting the taken name: a Warning Event on the Device naming the Node, and a gauge")
		Eventually(func(g Gomega) {
			list := &eventsv1.EventList{}
			g.Expect(k8s.List(ctx, list)).To(Succeed())
			var found []eventsv1.Event
			for _, e := range list.Items {
				if e.Regarding.Kind == "Device" && e.Regarding.Name == devName && e.Reason == itmv1.ReasonNodeDeviceNameTaken {
					found = append(found, e)
				}
			}
			g.Expect(found).NotTo(BeEmpty())
			g.Expect(found[0].Type).To(Equal(corev1.EventTypeWarning))
			g.Expect(found[0].Related).NotTo(BeNil())
			g.Expect(found[0].Related.Name).To(Equal(nodeName))
			g.Expect(found[0].Note).To(ContainSubstring("Node discovery did not create it"))
		}).Should(Succeed())
		Eventually(func() float64 {
			return gauge("itmanager_nodediscovery_name_conflicts", map[string]string{"node": nodeName})
		}).Should(Equal(1.0))

		By("leaving both Devices as they were: no class, nodeName, owner, label, facts or check-ins of the Node")
		Consistently(func(g Gomega) {
			d := getDevice(devName)
			g.Expect(d.Spec.Class).To(Equal(itmv1.DeviceClassLaptop))
			g.Expect(d.Spec.NodeName).To(BeEmpty())
			g.Expect(d.Spec.Assignee).To(Equal(person))
			g.Expect(d.OwnerReferences).To(BeEmpty())
			g.Expect(d.Labels).To(Equal(map[string]string{"team": "payments"}))
			g.Expect(d.Status.Observed).To(BeNil())
			m := getDevice(mirror.Name)
			g.Expect(m.Status.Observed).To(BeNil(), "the Node's addresses never reach a Device discovery did not make")
			g.Expect(conditionOf(mirror.Name, itmv1.DeviceConditionCheckedIn)()).NotTo(Equal(metav1.ConditionTrue), "nor its kubelet's check-ins")
		}).WithTimeout(3 * time.Second).Should(Succeed())

		By("creating the Node's own Device once the hand-made one is gone")
		Expect(k8s.Delete(ctx, laptop)).To(Succeed())
		Eventually(func(g Gomega) {
			d := &itmv1.Device{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Name: devName}, d)).To(Succeed())
			g.Expect(d.Spec.Class).To(Equal(itmv1.DeviceClassNode))
			g.Expect(d.Spec.Assignee).To(BeEmpty())
			g.Expect(metav1.IsControlledBy(d, node)).To(BeTrue())
			g.Expect(d.Status.Observed).NotTo(BeNil())
			g.Expect(d.Status.Observed.Addresses).To(Equal([]string{"192.0.2.10"}))
		}).Should(Succeed())
		Expect(gauge("itmanager_nodediscovery_name_conflicts", map[string]string{"node": nodeName})).To(Equal(-1.0), "the conflict is over")
		Expect(k8s.Delete(ctx, node)).To(Succeed())
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

	It("does not count a static address outside --agent-address-cidrs: Ready names it and no AccessPolicy allows it", func() {
		person := uniqueName("ivan")
		mixed := staticDevice(person, nil, "192.0.2.50", "10.31.0.1")
		outside := staticDevice(person, nil, "192.0.2.51")
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(getDevice(mixed.Name).Status.Conditions, itmv1.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(itmv1.ReasonAddressOutsideRanges))
			g.Expect(c.Message).To(Equal("addresses outside the allowed ranges (--agent-address-cidrs) do not count: 192.0.2.50"))
		}).Should(Succeed())

		ns := newNamespace(nil)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Users = []string{person}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}, Ports: []itmv1.Port{{Port: 443}}}}
		})
		Eventually(ingressCIDRs(ns, "itm-"+p.Name)).Should(Equal([]string{"10.31.0.1/32"}))
		Eventually(policyStatus(p.Name)).Should(HaveField("Denied", ContainElement(itmv1.DeniedDevice{
			Device: outside.Name, Reasons: []string{"address 192.0.2.51 is outside the allowed ranges", "no usable address"},
		})))

		By("moving the address into the ranges makes it count")
		updateDevice(mixed.Name, func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.31.0.2", "10.31.0.1"} })
		Eventually(conditionOf(mixed.Name, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
		Eventually(ingressCIDRs(ns, "itm-"+p.Name)).Should(Equal([]string{"10.31.0.1/32", "10.31.0.2/32"}))
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
