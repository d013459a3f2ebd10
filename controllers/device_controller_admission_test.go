package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var _ = Describe("Device assign admission", func() {
	edit := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"devices"},
		Verbs: []string{"get", "list", "create", "update", "patch"}}
	assign := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"devices"}, Verbs: []string{"assign"}}

	newDevice := func(mutate ...func(*itmv1.Device)) *itmv1.Device {
		d := &itmv1.Device{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("lt")},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop,
				Hardware: &itmv1.Hardware{Vendor: "Lenovo"}, OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux}},
		}
		for _, m := range mutate {
			m(d)
		}
		return d
	}
	withAssignee := func(d *itmv1.Device) { d.Spec.Assignee = uniqueName("colleague") }
	withAddresses := func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.40.0.1"} }
	withLabels := func(d *itmv1.Device) { d.Labels = map[string]string{"itmanager.io/ring": "0"} }
	refusal := func(field, user, device string) string {
		return fmt.Sprintf(`%s: user "%s" may not assign Device "%s": setting or changing assignee, addresses or labels requires the verb "assign" on devices.itmanager.io/%s`,
			field, user, device, device)
	}

	It("refuses a user without assign who creates a Device with an assignee, addresses or labels, and accepts one who holds it", func() {
		user, holder := uniqueName("bob"), uniqueName("carol")
		editor := impersonate(user, edit)
		assigner := impersonate(holder, edit, assign)

		// The admission policy takes effect once the API server loaded it.
		d := newDevice(withAssignee)
		Eventually(func() error { return editor.Create(ctx, d.DeepCopy()) }).WithTimeout(10 * time.Second).
			Should(MatchError(ContainSubstring(refusal("spec.assignee", user, d.Name))))
		d = newDevice(withAddresses)
		Expect(editor.Create(ctx, d.DeepCopy())).To(MatchError(ContainSubstring(refusal("spec.addresses", user, d.Name))))
		d = newDevice(withLabels)
		Expect(editor.Create(ctx, d.DeepCopy())).To(MatchError(ContainSubstring(refusal("metadata.labels", user, d.Name))))

		By("the same Devices from a holder of assign")
		for _, m := range []func(*itmv1.Device){withAssignee, withAddresses, withLabels} {
			Expect(assigner.Create(ctx, newDevice(m))).To(Succeed())
		}
		By("a user without assign still creates a Device with none of them")
		Expect(editor.Create(ctx, newDevice())).To(Succeed())
	})

	It("refuses a user without assign who changes the assignee, addresses or labels, lets them edit anything else, and accepts a holder", func() {
		user, holder := uniqueName("dave"), uniqueName("erin")
		editor := impersonate(user, edit)
		assigner := impersonate(holder, edit, assign)
		d := newDevice(func(d *itmv1.Device) {
			d.Spec.Assignee, d.Spec.Addresses, d.Labels = uniqueName("dave"), []string{"10.40.1.1", "10.40.1.2"}, map[string]string{"itmanager.io/ring": "1"}
		})
		Expect(k8s.Create(ctx, d)).To(Succeed())

		Eventually(func() error {
			return updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Assignee = uniqueName("colleague") })
		}).WithTimeout(10 * time.Second).Should(MatchError(ContainSubstring(refusal("spec.assignee", user, d.Name))))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Assignee = "" })).
			To(MatchError(ContainSubstring(refusal("spec.assignee", user, d.Name))), "unassigning is a change too")
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Addresses = append(o.Spec.Addresses, "10.40.1.3") })).
			To(MatchError(ContainSubstring(refusal("spec.addresses", user, d.Name))))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Addresses = o.Spec.Addresses[:1] })).
			To(MatchError(ContainSubstring(refusal("spec.addresses", user, d.Name))))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Labels["itmanager.io/ring"] = "0" })).
			To(MatchError(ContainSubstring(refusal("metadata.labels", user, d.Name))))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Labels["team"] = "payments" })).
			To(MatchError(ContainSubstring(refusal("metadata.labels", user, d.Name))))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { delete(o.Labels, "itmanager.io/ring") })).
			To(MatchError(ContainSubstring(refusal("metadata.labels", user, d.Name))))

		By("other fields stay an ordinary edit, as does the same set of addresses in another order")
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) {
			o.Spec.Hardware = &itmv1.Hardware{Vendor: "Lenovo", Model: "ThinkPad X1", SerialNumber: "PF3X8K2Q"}
			o.Spec.OS.TargetVersion = "24.04.1"
			o.Spec.Lifecycle = itmv1.DeviceLifecycleLost
			o.Spec.Addresses = []string{"10.40.1.2", "10.40.1.1"}
			o.Annotations = map[string]string{"note": "left on a train"}
		})).To(Succeed())
		stored := getDevice(d.Name)
		Expect(stored.Spec.OS.TargetVersion).To(Equal("24.04.1"))
		Expect(stored.Spec.Assignee).To(Equal(d.Spec.Assignee))

		By("a holder of assign changes all three")
		Expect(updateAs(assigner, d.Name, func(o *itmv1.Device) {
			o.Spec.Assignee = uniqueName("frank")
			o.Spec.Addresses = []string{"10.40.1.9"}
			o.Labels = map[string]string{"itmanager.io/ring": "2"}
		})).To(Succeed())
	})

	It("refuses a user without assign who makes a Device mirror a Node (class, nodeName, owner) or brings a Lost one back, and accepts a holder", func() {
		user, holder := uniqueName("gina"), uniqueName("hank")
		editor := impersonate(user, edit)
		assigner := impersonate(holder, edit, assign)
		const mirror = `: a Node device takes the addresses and check-ins of its Node, which requires the verb "assign" on devices.itmanager.io/`
		d := newDevice()
		Expect(k8s.Create(ctx, d)).To(Succeed())

		Eventually(func() error {
			return updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Class, o.Spec.NodeName = itmv1.DeviceClassNode, "worker-9" })
		}).WithTimeout(10 * time.Second).Should(MatchError(ContainSubstring(
			`spec.class: user "` + user + `" may not change the class of Device "` + d.Name + `"` + mirror + d.Name)))
		node := newDevice(func(n *itmv1.Device) {
			n.Spec.Class, n.Spec.NodeName, n.Spec.Hardware = itmv1.DeviceClassNode, "worker-8", nil
		})
		Expect(k8s.Create(ctx, node)).To(Succeed())
		Expect(updateAs(editor, node.Name, func(o *itmv1.Device) { o.Spec.NodeName = "worker-9" })).To(MatchError(ContainSubstring(
			`spec.nodeName: user "` + user + `" may not set or change the Node of Device "` + node.Name + `"` + mirror + node.Name)))
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) {
			o.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "worker-9", UID: "0b6e2f7a-0000-4000-8000-000000000009", Controller: ptr.To(true)}}
		})).To(MatchError(ContainSubstring(`metadata.ownerReferences: user "` + user + `" may not set or change the owners of Device "` + d.Name + `"`)))
		Expect(editor.Create(ctx, newDevice(func(n *itmv1.Device) { n.Spec.Class, n.Spec.NodeName = itmv1.DeviceClassNode, "worker-9" }))).
			To(MatchError(ContainSubstring(`spec.nodeName: user "`+user+`"`)), "at creation too")

		By("retiring a device is an ordinary edit; bringing it back to Active is not")
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Lifecycle = itmv1.DeviceLifecycleLost })).To(Succeed())
		Expect(updateAs(editor, d.Name, func(o *itmv1.Device) { o.Spec.Lifecycle = itmv1.DeviceLifecycleActive })).To(MatchError(ContainSubstring(
			`spec.lifecycle: user "` + user + `" may not bring Device "` + d.Name + `" back from Lost to Active: it regains its access, which requires the verb "assign"`)))

		By("the positive control: a holder of assign does all of it")
		Expect(updateAs(assigner, d.Name, func(o *itmv1.Device) { o.Spec.Lifecycle = itmv1.DeviceLifecycleActive })).To(Succeed())
		Expect(updateAs(assigner, d.Name, func(o *itmv1.Device) { o.Spec.Class = itmv1.DeviceClassServer })).To(Succeed())
		Expect(updateAs(assigner, node.Name, func(o *itmv1.Device) { o.Spec.NodeName = "worker-9" })).To(Succeed())
	})

	It("checks assign on the Device by name, and leaves devices/status alone", func() {
		user := uniqueName("grace")
		mine, theirs := newDevice(), newDevice()
		Expect(k8s.Create(ctx, mine)).To(Succeed())
		Expect(k8s.Create(ctx, theirs)).To(Succeed())
		c := impersonate(user, edit,
			rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"devices"}, Verbs: []string{"assign"}, ResourceNames: []string{mine.Name}},
			rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"devices/status"}, Verbs: []string{"get", "update", "patch"}})

		Eventually(func() error {
			return updateAs(c, theirs.Name, func(o *itmv1.Device) { o.Spec.Assignee = user })
		}).WithTimeout(10 * time.Second).Should(MatchError(ContainSubstring(refusal("spec.assignee", user, theirs.Name))))
		Expect(updateAs(c, mine.Name, func(o *itmv1.Device) { o.Spec.Assignee = user })).To(Succeed())

		By("a status write by the same user is not matched by the policy")
		Eventually(func() error {
			cur := getDevice(theirs.Name)
			cur.Status.Observed = &itmv1.ObservedFacts{OSVersion: "24.04"}
			return c.Status().Update(ctx, cur)
		}).Should(Succeed())
	})

	It("lets the onboarding controller, which holds assign, assign a device", func() {
		person := uniqueName("heidi")
		d := newDevice(func(d *itmv1.Device) { d.Labels = map[string]string{"pool": person} })
		Expect(k8s.Create(ctx, d)).To(Succeed())
		r := &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: person},
			Spec: itmv1.OnboardingRequestSpec{
				Person:           itmv1.Person{DisplayName: person, Email: person + "@example.com"},
				ApprovalRequired: ptr.To(false),
				Devices: []itmv1.DeviceRequest{{Class: itmv1.DeviceClassLaptop,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": person}}}},
			},
		}
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(func() string { return getDevice(d.Name).Spec.Assignee }).WithTimeout(30 * time.Second).Should(Equal(person))
	})
})
