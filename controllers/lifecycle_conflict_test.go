package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
)

// Lifecycle and address conflicts end to end: the Device and AccessPolicy
// controllers, the check-in service and the generated NetworkPolicies, with
// two policies selecting the same devices by different subjects (a user, a
// deviceSelector) so that "every policy" is more than one.

// fleet is two Enforce policies over the same devices: byUser selects the
// person's devices into nsA and nsB, bySelector selects the label into nsB
// and nsC (so nsB holds one NetworkPolicy of each) and requires a fresh,
// encrypted device.
type fleet struct {
	person             string
	labels             map[string]string
	byUser, bySelector string
	// networkPoliciesOf lists each policy's NetworkPolicies (namespace, name).
	networkPoliciesOf map[string][][2]string
	tokens            map[string]string // device → agent token
	sequence          map[string]uint64 // device → last check-in sequence
}

func newFleet() *fleet {
	GinkgoHelper()
	f := &fleet{person: uniqueName("fay"), labels: map[string]string{"fleet": uniqueName("f")}, tokens: map[string]string{}, sequence: map[string]uint64{}}
	nsA, nsB, nsC := newNamespace(nil), newNamespace(nil), newNamespace(nil)
	f.byUser = accessPolicy(func(p *itmv1.AccessPolicy) {
		p.Spec.Subjects.Users = []string{f.person}
		p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{nsA, nsB}, Ports: []itmv1.Port{{Port: 443}}}}
	}).Name
	f.bySelector = accessPolicy(func(p *itmv1.AccessPolicy) {
		p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: f.labels}
		p.Spec.Posture = &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: 2 * time.Minute}, RequireDiskEncryption: true}
		p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{nsB, nsC}, Ports: []itmv1.Port{{Port: 5432}}}}
	}).Name
	f.networkPoliciesOf = map[string][][2]string{
		f.byUser:     {{nsA, "itm-" + f.byUser}, {nsB, "itm-" + f.byUser}},
		f.bySelector: {{nsB, "itm-" + f.bySelector}, {nsC, "itm-" + f.bySelector}},
	}
	return f
}

// agent creates an agent laptop assigned to assignee with the fleet's
// labels and checks it in once from addr, as its agent would.
func (f *fleet) agent(assignee, addr string) string {
	GinkgoHelper()
	d := agentDevice(func(d *itmv1.Device) {
		d.Spec.Assignee = assignee
		d.Labels = f.labels
	})
	f.tokens[d.Name] = tokenOf(d.Name)
	f.checkIn(d.Name, addr)
	return d.Name
}

// checkIn reports addr as the device's only address and waits until the
// manager sees it.
func (f *fleet) checkIn(name, addr string) {
	GinkgoHelper()
	f.sequence[name]++
	Expect(post(name, f.tokens[name], checkin.Request{Sequence: f.sequence[name], Facts: facts(addr)}).code).To(Equal(200))
	Eventually(func() []string {
		d := &itmv1.Device{}
		if err := managerCache.Get(ctx, client.ObjectKey{Name: name}, d); err != nil || d.Status.Observed == nil {
			return nil
		}
		return d.Status.Observed.Addresses
	}).Should(Equal([]string{addr}))
}

// expectAllowed waits until every NetworkPolicy of policy allows exactly
// cidrs ("isolated" for none).
func (f *fleet) expectAllowed(policy string, cidrs ...string) {
	GinkgoHelper()
	if len(cidrs) == 0 {
		cidrs = []string{"isolated"}
	}
	for _, np := range f.networkPoliciesOf[policy] {
		Eventually(ingressCIDRs(np[0], np[1])).Should(Equal(cidrs), "NetworkPolicy %s/%s", np[0], np[1])
	}
}

func deniedEntry(name string, reasons ...string) itmv1.DeniedDevice {
	return itmv1.DeniedDevice{Device: name, Reasons: reasons}
}

var _ = Describe("Device lifecycle and address conflicts through the controllers", func() {
	It("withdraws a device that becomes Lost, and one that becomes Retired, from every NetworkPolicy of every policy that allowed it, and a Lost device checking in again gets nothing back", func() {
		f := newFleet()
		f.agent(f.person, "10.41.0.1")
		lost := f.agent(f.person, "10.41.0.5")
		retired := f.agent(f.person, "10.41.0.9")
		all := []string{"10.41.0.1/32", "10.41.0.5/32", "10.41.0.9/32"}
		f.expectAllowed(f.byUser, all...)
		f.expectAllowed(f.bySelector, all...)
		for _, p := range []string{f.byUser, f.bySelector} {
			Eventually(policyStatus(p)).Should(HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 3}))
		}

		By("the laptop reported Lost: its address leaves all four NetworkPolicies, the others stay")
		updateDevice(lost, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleLost })
		f.expectAllowed(f.byUser, "10.41.0.1/32", "10.41.0.9/32")
		f.expectAllowed(f.bySelector, "10.41.0.1/32", "10.41.0.9/32")
		for _, p := range []string{f.byUser, f.bySelector} {
			Eventually(policyStatus(p)).Should(And(
				HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 2, Denied: 1}),
				HaveField("Denied", []itmv1.DeniedDevice{deniedEntry(lost, "device is Lost")}),
			), "policy %s", p)
		}
		Eventually(func() itmv1.DevicePhase { return getDevice(lost).Status.Phase }).Should(Equal(itmv1.DevicePhaseLost))

		By("the laptop retired: its address leaves them too, and only the kept device remains")
		updateDevice(retired, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })
		f.expectAllowed(f.byUser, "10.41.0.1/32")
		f.expectAllowed(f.bySelector, "10.41.0.1/32")
		for _, p := range []string{f.byUser, f.bySelector} {
			Eventually(policyStatus(p)).Should(And(
				HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 1, Denied: 2}),
				HaveField("Denied", ConsistOf(deniedEntry(lost, "device is Lost"), deniedEntry(retired, "device is Retired"))),
			), "policy %s", p)
		}

		By("the Lost laptop's agent still checks in (a stolen laptop online) from a new address: nothing comes back")
		f.checkIn(lost, "10.41.0.13")
		Consistently(func(g Gomega) {
			for _, p := range []string{f.byUser, f.bySelector} {
				for _, np := range f.networkPoliciesOf[p] {
					g.Expect(ingressCIDRs(np[0], np[1])()).To(Equal([]string{"10.41.0.1/32"}), "NetworkPolicy %s/%s", np[0], np[1])
				}
			}
		}).WithTimeout(1500 * time.Millisecond).Should(Succeed())
		for _, p := range []string{f.byUser, f.bySelector} {
			Expect(policyStatus(p)().Denied).To(ContainElement(deniedEntry(lost, "device is Lost")))
		}
	})

	It("denies both devices when a second one claims an allowed device's address, in every policy and saying why, and restores the first when the claim is released (address changed, device deleted or retired)", func() {
		f := newFleet()
		first := f.agent(f.person, "10.42.0.1")
		f.agent(f.person, "10.42.0.9") // a bystander: the NetworkPolicies never turn empty
		f.expectAllowed(f.byUser, "10.42.0.1/32", "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.1/32", "10.42.0.9/32")

		By("someone else's labelled laptop checks in with the same address: denied for both, in every policy")
		second := f.agent(uniqueName("gus"), "10.42.0.1")
		f.expectAllowed(f.byUser, "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.9/32")
		Eventually(policyStatus(f.byUser)).Should(And(
			HaveField("Devices", itmv1.DeviceCounts{Matched: 2, Allowed: 1, Denied: 1}),
			HaveField("Denied", []itmv1.DeniedDevice{deniedEntry(first, "address 10.42.0.1 is also claimed by "+second, "no usable address")}),
		))
		Eventually(policyStatus(f.bySelector)).Should(And(
			HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 1, Denied: 2}),
			HaveField("Denied", ConsistOf(
				deniedEntry(first, "address 10.42.0.1 is also claimed by "+second, "no usable address"),
				deniedEntry(second, "address 10.42.0.1 is also claimed by "+first, "no usable address"),
			)),
		))
		for name, other := range map[string]string{first: second, second: first} {
			Eventually(func(g Gomega) {
				c := meta.FindStatusCondition(getDevice(name).Status.Conditions, itmv1.ConditionReady)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(c.Reason).To(Equal(itmv1.ReasonAddressConflict))
				g.Expect(c.Message).To(Equal("addresses claimed by more than one Device are denied for all of them: 10.42.0.1 (also claimed by " + other + ")"))
			}).Should(Succeed(), "Device %s", name)
		}

		By("the second laptop moves to another address: the first is restored everywhere, the second allowed where it is selected")
		f.checkIn(second, "10.42.0.2")
		f.expectAllowed(f.byUser, "10.42.0.1/32", "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.1/32", "10.42.0.2/32", "10.42.0.9/32")
		Eventually(policyStatus(f.byUser)).Should(HaveField("Denied", BeEmpty()))
		Eventually(policyStatus(f.bySelector)).Should(HaveField("Denied", BeEmpty()))
		Eventually(conditionOf(first, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))

		By("a static device no policy selects claims the first one's address: the first is denied again")
		squatter := staticDevice("", nil, "10.42.0.1")
		f.expectAllowed(f.byUser, "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.2/32", "10.42.0.9/32")
		Eventually(policyStatus(f.byUser)).Should(HaveField("Denied",
			[]itmv1.DeniedDevice{deniedEntry(first, "address 10.42.0.1 is also claimed by "+squatter.Name, "no usable address")}))

		By("deleting that device restores the first")
		Expect(k8s.Delete(ctx, squatter)).To(Succeed())
		f.expectAllowed(f.byUser, "10.42.0.1/32", "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.1/32", "10.42.0.2/32", "10.42.0.9/32")
		Eventually(policyStatus(f.byUser)).Should(HaveField("Denied", BeEmpty()))
		Eventually(conditionOf(first, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))

		By("a claimant that is retired claims nothing any more: the first is restored again")
		retired := staticDevice("", nil, "10.42.0.1")
		f.expectAllowed(f.byUser, "10.42.0.9/32")
		updateDevice(retired.Name, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })
		f.expectAllowed(f.byUser, "10.42.0.1/32", "10.42.0.9/32")
		f.expectAllowed(f.bySelector, "10.42.0.1/32", "10.42.0.2/32", "10.42.0.9/32")
		Eventually(conditionOf(first, itmv1.ConditionReady)).Should(Equal(metav1.ConditionTrue))
	})

	It("counts two spellings of one address as one claim: a static FD00:0::43:1 conflicts with a reported fd00::43:1, and both are denied", func() {
		f := newFleet()
		first := f.agent(f.person, "fd00::43:1")
		f.agent(f.person, "10.43.0.9")
		f.expectAllowed(f.byUser, "10.43.0.9/32", "fd00::43:1/128")

		squatter := staticDevice("", nil, "FD00:0::43:1")
		f.expectAllowed(f.byUser, "10.43.0.9/32")
		f.expectAllowed(f.bySelector, "10.43.0.9/32")
		Eventually(policyStatus(f.byUser)).Should(HaveField("Denied",
			[]itmv1.DeniedDevice{deniedEntry(first, "address fd00::43:1 is also claimed by "+squatter.Name, "no usable address")}))
		Eventually(conditionOf(squatter.Name, itmv1.ConditionReady)).Should(Equal(metav1.ConditionFalse))

		Expect(k8s.Delete(ctx, squatter)).To(Succeed())
		f.expectAllowed(f.byUser, "10.43.0.9/32", "fd00::43:1/128")
	})
})
