package controllers_test

import (
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// newNamespace creates a namespace with a unique name.
func newNamespace(labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ns"), Labels: labels}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func staticDevice(assignee string, labels map[string]string, addrs ...string) *itmv1.Device {
	GinkgoHelper()
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("srv"), Labels: labels},
		Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Assignee: assignee, Addresses: addrs},
	}
	Expect(k8s.Create(ctx, d)).To(Succeed())
	return d
}

func accessPolicy(mutate func(*itmv1.AccessPolicy)) *itmv1.AccessPolicy {
	GinkgoHelper()
	p := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ap")}}
	mutate(p)
	Expect(k8s.Create(ctx, p)).To(Succeed())
	return p
}

func updatePolicy(name string, mutate func(*itmv1.AccessPolicy)) {
	GinkgoHelper()
	Expect(updateAs(k8s, name, mutate)).To(Succeed())
}

func policyStatus(name string) func() itmv1.AccessPolicyStatus {
	return func() itmv1.AccessPolicyStatus {
		p := &itmv1.AccessPolicy{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, p); err != nil {
			return itmv1.AccessPolicyStatus{}
		}
		return p.Status
	}
}

func readyOf(name string) func() string {
	return func() string {
		c := meta.FindStatusCondition(policyStatus(name)().Conditions, itmv1.ConditionReady)
		if c == nil {
			return ""
		}
		return string(c.Status) + "/" + c.Reason
	}
}

// ingressCIDRs returns a NetworkPolicy's allowed CIDRs, "isolated" when it
// has no ingress rule, and "absent" when it does not exist.
func ingressCIDRs(ns, name string) func() []string {
	return func() []string {
		np := &networkingv1.NetworkPolicy{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, np); err != nil {
			if apierrors.IsNotFound(err) {
				return []string{"absent"}
			}
			return []string{err.Error()}
		}
		if len(np.Spec.Ingress) == 0 {
			return []string{"isolated"}
		}
		var out []string
		for _, r := range np.Spec.Ingress {
			for _, f := range r.From {
				out = append(out, f.IPBlock.CIDR)
			}
		}
		return out
	}
}

// activePerson onboards a person (approval not required, as the admin may
// set) in the named AccountProviders and waits for the onboarding
// controller to make them Active.
func activePerson(name string, groups []string, providers ...string) {
	GinkgoHelper()
	r := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: itmv1.OnboardingRequestSpec{
			Person:           itmv1.Person{DisplayName: name, Email: name + "@example.com"},
			Groups:           groups,
			AccountProviders: providers,
			ApprovalRequired: ptr.To(false),
		},
	}
	Expect(k8s.Create(ctx, r)).To(Succeed())
	Eventually(func() itmv1.OnboardingPhase {
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(r), r)).To(Succeed())
		return r.Status.Phase
	}).WithTimeout(30 * time.Second).Should(Equal(itmv1.OnboardingPhaseActive))
}

var _ = Describe("AccessPolicy", func() {
	It("allows only compliant devices' addresses into every destination namespace and follows posture changes", func() {
		person := uniqueName("alice")
		nsA, nsB := newNamespace(nil), newNamespace(nil)
		d1 := staticDevice(person, nil, "10.21.0.1")
		d2 := staticDevice(person, nil, "10.21.0.2")
		retired := staticDevice(person, nil, "10.21.0.3")
		updateDevice(retired.Name, func(d *itmv1.Device) { d.Spec.Lifecycle = itmv1.DeviceLifecycleRetired })
		staticDevice(uniqueName("bob"), nil, "10.21.0.4") // someone else's

		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Users = []string{person}
			p.Spec.Destinations = []itmv1.Destination{{
				Namespaces:  []string{nsA, nsB},
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "wiki"}},
				Ports:       []itmv1.Port{{Port: 443}},
			}}
		})
		name := "itm-" + p.Name
		for _, ns := range []string{nsA, nsB} {
			Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.21.0.1/32", "10.21.0.2/32"}))
		}
		np := &networkingv1.NetworkPolicy{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: nsA, Name: name}, np)).To(Succeed())
		Expect(np.Spec.PodSelector.MatchLabels).To(Equal(map[string]string{"app": "wiki"}))
		Expect(np.Spec.PolicyTypes).To(Equal([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress}))
		Expect(np.Spec.Ingress[0].Ports).To(HaveLen(1))
		Expect(np.Spec.Ingress[0].Ports[0].Port.IntVal).To(BeEquivalentTo(443))
		Expect(np.Labels).To(HaveKeyWithValue(itmv1.LabelManagedBy, itmv1.ManagedByValue))
		Expect(metav1.IsControlledBy(np, &metav1.ObjectMeta{UID: p.UID})).To(BeTrue())
		Expect(np.ManagedFields).To(ContainElement(HaveField("Manager", controllers.AccessFieldManager)))

		Eventually(policyStatus(p.Name)).Should(And(
			HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 2, Denied: 1}),
			HaveField("Denied", []itmv1.DeniedDevice{{Device: retired.Name, Reasons: []string{"device is Retired"}}}),
			HaveField("NetworkPolicies", BeEquivalentTo(2)),
			HaveField("AddressBlocks", BeEquivalentTo(2)),
			HaveField("ObservedGeneration", p.Generation),
		))
		Eventually(readyOf(p.Name)).Should(Equal("True/" + itmv1.ReasonEnforced))

		By("requiring disk encryption, which no device has reported: every device is denied and the pods are isolated")
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) { p.Spec.Posture = &itmv1.Posture{RequireDiskEncryption: true} })
		Eventually(ingressCIDRs(nsA, name)).Should(Equal([]string{"isolated"}))
		Eventually(readyOf(p.Name)).Should(Equal("True/" + itmv1.ReasonNoAllowedDevices))
		Expect(policyStatus(p.Name)().Denied).To(ContainElement(itmv1.DeniedDevice{Device: d1.Name, Reasons: []string{"disk encryption unknown"}}))

		By("one device reporting an encrypted disk: its address alone comes back")
		d := getDevice(d1.Name)
		d.Status.Observed = &itmv1.ObservedFacts{DiskEncrypted: ptr.To(true)}
		Expect(k8s.Status().Update(ctx, d)).To(Succeed())
		for _, ns := range []string{nsA, nsB} {
			Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.21.0.1/32"}))
		}
		Eventually(policyStatus(p.Name)).Should(HaveField("Devices", itmv1.DeviceCounts{Matched: 3, Allowed: 1, Denied: 2}))

		By("an unrelated change to the device: nothing is rewritten")
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: nsA, Name: name}, np)).To(Succeed())
		rv := np.ResourceVersion
		updateDevice(d2.Name, func(d *itmv1.Device) { d.Spec.Hardware = &itmv1.Hardware{Vendor: "acme"} })
		Consistently(func() string {
			_ = k8s.Get(ctx, types.NamespacedName{Namespace: nsA, Name: name}, np)
			return np.ResourceVersion
		}).WithTimeout(2 * time.Second).Should(Equal(rv))
	})

	It("withdraws a silent device's address the moment its check-in is older than maxCheckInAge, and restores it on the next check-in", func() {
		label := map[string]string{"fleet": uniqueName("kiosk")}
		dev := agentDevice(func(d *itmv1.Device) { d.Labels = label })
		token := tokenOf(dev.Name)
		ns := newNamespace(nil)
		const maxAge = 4 * time.Second
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Posture = &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: maxAge}}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		})
		name := "itm-" + p.Name
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"isolated"}))
		// The status follows the NetworkPolicies in the same reconcile.
		Eventually(func() []itmv1.DeniedDevice { return policyStatus(p.Name)().Denied }).
			Should(ContainElement(itmv1.DeniedDevice{Device: dev.Name, Reasons: []string{"no check-in recorded"}}))

		Expect(post(dev.Name, token, checkin.Request{Sequence: 1, Facts: facts("10.23.0.7")}).code).To(Equal(200))
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.23.0.7/32"}))
		renewed := leaseOf(dev.Name).Spec.RenewTime.Time
		expiry := renewed.Add(maxAge)

		Eventually(ingressCIDRs(ns, name)).WithTimeout(maxAge + 5*time.Second).WithPolling(50 * time.Millisecond).
			Should(Equal([]string{"isolated"}))
		withdrawn := time.Now()
		Expect(withdrawn).To(BeTemporally(">=", expiry), "withdrawn before the check-in was too old")
		Expect(withdrawn).To(BeTemporally("<", expiry.Add(2*time.Second)), "withdrawn long after the check-in was too old")
		Eventually(func() []itmv1.DeniedDevice { return policyStatus(p.Name)().Denied }).Should(ContainElement(itmv1.DeniedDevice{Device: dev.Name, Reasons: []string{
			"last check-in " + renewed.UTC().Format(time.RFC3339) + " is older than 4s",
		}}))

		By("checking in again: the Lease renewal alone brings the address back")
		Expect(post(dev.Name, token, checkin.Request{Sequence: 2, Facts: facts("10.23.0.7")}).code).To(Equal(200))
		Eventually(ingressCIDRs(ns, name)).WithTimeout(3 * time.Second).Should(Equal([]string{"10.23.0.7/32"}))
	})

	It("prunes what it no longer needs, leaves foreign objects alone, never targets the operator's namespace, and is Stalled while enforced only in part", func() {
		sel := map[string]string{"team": uniqueName("t")}
		nsA, nsB := newNamespace(sel), newNamespace(sel)
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.24.0.1")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: sel}}}
		})
		name := "itm-" + p.Name
		Eventually(ingressCIDRs(nsA, name)).Should(Equal([]string{"10.24.0.1/32"}))
		Eventually(ingressCIDRs(nsB, name)).Should(Equal([]string{"10.24.0.1/32"}))

		By("a namespace created later with the label gets one too; one losing the label loses it")
		nsC := newNamespace(sel)
		Eventually(ingressCIDRs(nsC, name)).Should(Equal([]string{"10.24.0.1/32"}))
		nsObj := &corev1.Namespace{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: nsB}, nsObj)).To(Succeed())
		nsObj.Labels = nil
		Expect(k8s.Update(ctx, nsObj)).To(Succeed())
		Eventually(ingressCIDRs(nsB, name)).Should(Equal([]string{"absent"}))

		By("a NetworkPolicy someone else created under the generated name is reported, not taken over")
		nsD := newNamespace(nil)
		foreign := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsD, Name: name},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		Expect(k8s.Create(ctx, foreign)).To(Succeed())
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) {
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{nsA, nsD, testenv.OperatorNamespace}}}
		})
		Eventually(ingressCIDRs(nsC, name)).Should(Equal([]string{"absent"}))
		Eventually(readyOf(p.Name)).Should(Equal("False/" + itmv1.ReasonForbiddenDestination))
		Expect(meta.IsStatusConditionTrue(policyStatus(p.Name)().Conditions, itmv1.ConditionStalled)).To(BeTrue(),
			"enforced only in part, and only a person can change that: Stalled (kstatus Failed)")
		c := meta.FindStatusCondition(policyStatus(p.Name)().Conditions, itmv1.ConditionReady)
		Expect(c.Message).To(ContainSubstring("spec.destinations[0].namespaces: itmanager-system is the operator's namespace"))
		Expect(c.Message).To(ContainSubstring("NetworkPolicy " + nsD + "/" + name + " exists and was not created by this policy"))
		Expect(ingressCIDRs(testenv.OperatorNamespace, name)()).To(Equal([]string{"absent"}))
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
		Expect(foreign.OwnerReferences).To(BeEmpty())
		Expect(foreign.Spec.Ingress).To(BeEmpty())
		Expect(ingressCIDRs(nsA, name)()).To(Equal([]string{"10.24.0.1/32"}))

		By("a hand edit of a generated object is put back")
		np := &networkingv1.NetworkPolicy{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: nsA, Name: name}, np)).To(Succeed())
		np.Spec.Ingress = nil
		Expect(k8s.Update(ctx, np)).To(Succeed())
		Eventually(ingressCIDRs(nsA, name)).Should(Equal([]string{"10.24.0.1/32"}))

		By("the problems fixed in the spec: Ready again, no longer Stalled")
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) {
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{nsA}}}
		})
		Eventually(readyOf(p.Name)).Should(Equal("True/" + itmv1.ReasonEnforced))
		Expect(meta.FindStatusCondition(policyStatus(p.Name)().Conditions, itmv1.ConditionStalled)).To(BeNil())
	})

	It("withdraws what it granted when the spec turns invalid (fail closed) by keeping the NetworkPolicy isolating, and reports it", func() {
		ns := newNamespace(nil)
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.28.0.1")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		})
		name := "itm-" + p.Name
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.28.0.1/32"}))

		// The schema accepts any operator string; only resolution finds out.
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "fleet", Operator: "Near"}}
		})
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"isolated"}))
		Consistently(ingressCIDRs(ns, name)).WithTimeout(2*time.Second).Should(Equal([]string{"isolated"}), "withdrawing access never opens pods")
		Eventually(readyOf(p.Name)).Should(Equal("False/" + itmv1.ReasonInvalidSpec))
		st := policyStatus(p.Name)()
		Expect(meta.FindStatusCondition(st.Conditions, itmv1.ConditionReady).Message).To(ContainSubstring("spec.subjects.deviceSelector"))
		Expect(meta.IsStatusConditionTrue(st.Conditions, itmv1.ConditionStalled)).To(BeTrue())
		cur := &itmv1.AccessPolicy{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), cur)).To(Succeed())
		Expect(st.ObservedGeneration).To(Equal(cur.Generation), "Stalled counts for kstatus only at the current generation")

		By("fixing the spec brings the access back")
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) { p.Spec.Subjects.DeviceSelector.MatchExpressions = nil })
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.28.0.1/32"}))
	})

	It("reports a write the API server refuses as ApplyFailed and Reconciling, keeps the generation unobserved, and converges once the write goes through", func() {
		mark := uniqueName("deny")
		ns := newNamespace(map[string]string{"itmanager-test/deny-netpol": mark})
		// An admission policy refusing NetworkPolicy creates in that namespace.
		vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: mark},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"networkpolicies"}},
					},
				}}},
				Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "refused by " + mark}},
			},
		}
		Expect(k8s.Create(ctx, vap)).To(Succeed())
		DeferCleanup(func() { _ = k8s.Delete(ctx, vap) })
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: mark},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        mark,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
				MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"itmanager-test/deny-netpol": mark}}},
			},
		}
		Expect(k8s.Create(ctx, binding)).To(Succeed())
		probe := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-"}}
		Eventually(func() error { return k8s.Create(ctx, probe.DeepCopy()) }).Should(MatchError(ContainSubstring("refused by "+mark)),
			"the API server refuses NetworkPolicies there before the policy exists")

		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.22.0.1")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		})
		Eventually(readyOf(p.Name)).Should(Equal("False/" + itmv1.ReasonApplyFailed))
		st := policyStatus(p.Name)()
		Expect(meta.FindStatusCondition(st.Conditions, itmv1.ConditionReady).Message).To(ContainSubstring("create NetworkPolicy " + ns + "/itm-" + p.Name))
		Expect(meta.FindStatusCondition(st.Conditions, itmv1.ConditionReconciling)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(st.ObservedGeneration).To(BeZero(), "a generation whose objects were not written is not observed")

		Expect(k8s.Delete(ctx, binding)).To(Succeed())
		Eventually(ingressCIDRs(ns, "itm-"+p.Name)).WithTimeout(30 * time.Second).Should(Equal([]string{"10.22.0.1/32"}))
		Eventually(readyOf(p.Name)).Should(Equal("True/" + itmv1.ReasonEnforced))
		st = policyStatus(p.Name)()
		Expect(meta.FindStatusCondition(st.Conditions, itmv1.ConditionReconciling)).To(BeNil())
		Expect(st.ObservedGeneration).To(Equal(p.Generation))
	})

	It("hands a recreated policy of the same name its own objects, never two controllers", func() {
		ns := newNamespace(nil)
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.27.0.1")
		spec := func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		}
		first := accessPolicy(spec)
		name := "itm-" + first.Name
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.27.0.1/32"}))

		Expect(k8s.Delete(ctx, first)).To(Succeed())
		second := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: first.Name}}
		spec(second)
		Expect(k8s.Create(ctx, second)).To(Succeed())
		Eventually(func(g Gomega) {
			np := &networkingv1.NetworkPolicy{}
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, np)).To(Succeed())
			g.Expect(np.OwnerReferences).To(HaveLen(1))
			g.Expect(np.OwnerReferences[0].UID).To(Equal(second.UID))
			g.Expect(ingressCIDRs(ns, name)()).To(Equal([]string{"10.27.0.1/32"}))
		}).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("in Audit mode computes and reports but writes nothing, and removes what Enforce wrote", func() {
		ns := newNamespace(nil)
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.25.0.1")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Mode = itmv1.AccessModeAudit
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
		})
		name := "itm-" + p.Name
		Eventually(readyOf(p.Name)).Should(Equal("True/" + itmv1.ReasonAudited))
		Expect(policyStatus(p.Name)()).To(And(
			HaveField("Devices", itmv1.DeviceCounts{Matched: 1, Allowed: 1}),
			HaveField("NetworkPolicies", BeEquivalentTo(1)),
			HaveField("AddressBlocks", BeEquivalentTo(1)),
		))
		Consistently(ingressCIDRs(ns, name)).WithTimeout(time.Second).Should(Equal([]string{"absent"}))
		Expect(gauge("itmanager_accesspolicy_devices", map[string]string{"policy": p.Name, "verdict": "allowed"})).To(Equal(1.0))
		Expect(gauge("itmanager_accesspolicy_address_blocks", map[string]string{"policy": p.Name})).To(Equal(1.0))

		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) { p.Spec.Mode = itmv1.AccessModeEnforce })
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.25.0.1/32"}))
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) { p.Spec.Mode = itmv1.AccessModeAudit })
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"absent"}))
	})

	It("binds allowed roles to the subjects' groups and ServiceAccounts, refuses others, and removes everything on delete", func() {
		group := uniqueName("sre")
		person := uniqueName("carol")
		provider := &itmv1.AccountProvider{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("k8s")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: "itmanager-users"}},
		}
		Expect(k8s.Create(ctx, provider)).To(Succeed())
		activePerson(person, []string{group}, provider.Name)
		staticDevice(person, nil, "10.26.0.1")
		ns := newNamespace(nil)
		later := uniqueName("later")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Groups = []string{group}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
			p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{
				{ClusterRole: "view"},
				{ClusterRole: "edit", Namespaces: []string{ns, "itmanager-users", later}},
				{ClusterRole: "cluster-admin"},
			}
		})
		crb := &rbacv1.ClusterRoleBinding{}
		Eventually(func() error {
			return k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".view"}, crb)
		}).Should(Succeed())
		Expect(crb.RoleRef.Name).To(Equal("view"))
		Expect(crb.Subjects).To(Equal([]rbacv1.Subject{
			{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "itmanager:" + group},
			{Kind: rbacv1.ServiceAccountKind, Namespace: "itmanager-users", Name: person},
		}))
		rb := &rbacv1.RoleBinding{}
		Eventually(func() error {
			return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "itm-" + p.Name + ".edit"}, rb)
		}).Should(Succeed())
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: "itm-" + p.Name + ".edit"}, rb)).
			To(Satisfy(apierrors.IsNotFound), "the account provider's namespace never receives bindings")
		Expect(k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".cluster-admin"}, crb)).To(Satisfy(apierrors.IsNotFound))
		Eventually(readyOf(p.Name)).Should(Equal("False/" + itmv1.ReasonRoleNotAllowed))
		msg := meta.FindStatusCondition(policyStatus(p.Name)().Conditions, itmv1.ConditionReady).Message
		Expect(msg).To(ContainSubstring(`spec.kubernetesAccess[2].clusterRole: "cluster-admin" is not a role this installation lets itmanager bind`))
		Expect(msg).To(ContainSubstring("spec.kubernetesAccess[1].namespaces: itmanager-users is the namespace of AccountProvider " + provider.Name))

		By("a namespace that did not exist yet gets its RoleBinding when it appears")
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: later}})).To(Succeed())
		Eventually(func() error {
			return k8s.Get(ctx, types.NamespacedName{Namespace: later, Name: "itm-" + p.Name + ".edit"}, &rbacv1.RoleBinding{})
		}).Should(Succeed())

		By("the bound ServiceAccount really may read the cluster")
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:itmanager-users:" + person,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods", Namespace: "default"},
		}}
		Eventually(func() bool {
			s := sar.DeepCopy()
			Expect(k8s.Create(ctx, s)).To(Succeed())
			return s.Status.Allowed
		}).Should(BeTrue())

		By("the person leaving the group: their ServiceAccount is no longer bound")
		req := &itmv1.OnboardingRequest{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: person}, req)).To(Succeed())
		req.Spec.Groups = []string{"elsewhere"}
		Expect(k8s.Update(ctx, req)).To(Succeed())
		Eventually(func() []rbacv1.Subject {
			_ = k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".view"}, crb)
			return crb.Subjects
		}).Should(Equal([]rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "itmanager:" + group}}))

		By("deleting the policy removes every generated object")
		Expect(k8s.Delete(ctx, p)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".view"}, crb)) &&
				apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "itm-" + p.Name + ".edit"}, rb)) &&
				slices.Equal(ingressCIDRs(ns, "itm-"+p.Name)(), []string{"absent"})
		}).WithTimeout(30 * time.Second).Should(BeTrue())
	})
})

var _ = Describe("AccessPolicy admission", func() {
	bind := bindRule
	policy := func(access ...itmv1.KubernetesAccess) *itmv1.AccessPolicy {
		return &itmv1.AccessPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("adm")},
			Spec: itmv1.AccessPolicySpec{
				Subjects:         itmv1.Subjects{Groups: []string{"sre"}},
				Destinations:     []itmv1.Destination{{Namespaces: []string{"shop"}}},
				KubernetesAccess: access,
			},
		}
	}

	It("refuses a policy granting a ClusterRole its author may not bind, naming the field and the role", func() {
		// Every author here may write NetworkPolicies in "shop" (cluster-wide):
		// only the bind gate is under test.
		author := impersonate(uniqueName("author"), writePolicies, writeNetworkPolicies, bind("view"))
		// The policy is enforced by the API server's admission plugin once it
		// has loaded it.
		Eventually(func() error {
			return author.Create(ctx, policy(itmv1.KubernetesAccess{ClusterRole: "admin"}))
		}).Should(MatchError(And(
			ContainSubstring("spec.kubernetesAccess"),
			ContainSubstring(`may not bind ClusterRole "admin"`),
		)))
		err := author.Create(ctx, policy(itmv1.KubernetesAccess{ClusterRole: "view"}, itmv1.KubernetesAccess{ClusterRole: "edit", Namespaces: []string{"shop"}}))
		Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring(`"edit"`))
		Expect(err.Error()).NotTo(ContainSubstring(`"view"`))

		Expect(author.Create(ctx, policy(itmv1.KubernetesAccess{ClusterRole: "view"}))).To(Succeed())
		Expect(author.Create(ctx, policy())).To(Succeed(), "a policy without kubernetesAccess needs no bind")
	})

	It("on update checks only entries that are new or changed", func() {
		admin := impersonate(uniqueName("admin"), writePolicies, writeNetworkPolicies, bind("view", "edit"))
		p := policy(itmv1.KubernetesAccess{ClusterRole: "view"})
		Eventually(func() error { return admin.Create(ctx, p) }).Should(Succeed())

		// A posture edit rewrites the NetworkPolicies of every destination:
		// the editor may write them there.
		editor := impersonate(uniqueName("editor"), writePolicies, writeNetworkPolicies)

		update := func(mutate func(*itmv1.AccessPolicy)) error { return updateAs(editor, p.Name, mutate) }
		Expect(update(func(cur *itmv1.AccessPolicy) { cur.Spec.Posture = &itmv1.Posture{RequireDiskEncryption: true} })).
			To(Succeed(), "editing the posture does not re-check roles someone else granted")
		err := update(func(cur *itmv1.AccessPolicy) {
			cur.Spec.KubernetesAccess = append(cur.Spec.KubernetesAccess, itmv1.KubernetesAccess{ClusterRole: "edit"})
		})
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.kubernetesAccess[1].clusterRole: user "`))
		Expect(err.Error()).To(ContainSubstring(`may not bind ClusterRole "edit"`))

		err = update(func(cur *itmv1.AccessPolicy) {
			cur.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: "view", Namespaces: []string{"shop"}}}
		})
		Expect(err).To(HaveOccurred(), "narrowing or widening an entry's namespaces is a changed entry")
		Expect(err.Error()).To(ContainSubstring(`may not bind ClusterRole "view"`))

		Expect(update(func(cur *itmv1.AccessPolicy) { cur.Spec.KubernetesAccess = nil })).To(Succeed(), "removing a grant needs nothing")
	})
})
