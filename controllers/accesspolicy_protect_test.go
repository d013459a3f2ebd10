package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// kubernetesProvider creates a Kubernetes AccountProvider in a namespace of
// its own, created first (as an admin would).
func kubernetesProvider() (name, namespace string) {
	GinkgoHelper()
	// Marked by an admin, as a provider's existing namespace must be.
	namespace = newNamespace(map[string]string{"itmanager.io/managed-namespace": "true"})
	p := &itmv1.AccountProvider{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("k8s")},
		Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
			Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: namespace}},
	}
	Expect(k8s.Create(ctx, p)).To(Succeed())
	return p.Name, namespace
}

// mayGroup asks the API server whether a member of group may verb resource
// in namespace.
func mayGroup(group, verb, resource, namespace string) func() bool {
	return func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: uniqueName("member"), Groups: []string{group, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Namespace: namespace},
		}}
		Expect(k8s.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}
}

func roleBindingSubjects(ns, name string) func() []rbacv1.Subject {
	return func() []rbacv1.Subject {
		rb := &rbacv1.RoleBinding{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, rb); err != nil {
			return []rbacv1.Subject{{Kind: "error", Name: err.Error()}}
		}
		return rb.Subjects
	}
}

var _ = Describe("AccessPolicy protected namespaces", func() {
	It("keeps an isolating NetworkPolicy when a destination becomes an AccountProvider's namespace, and never prunes it", func() {
		ns := newNamespace(nil)
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.29.0.1")
		group := uniqueName("ops")
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Subjects.Groups = []string{group}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
			p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: "edit", Namespaces: []string{ns}}}
		})
		name := "itm-" + p.Name
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"10.29.0.1/32"}))
		Eventually(roleBindingSubjects(ns, name+".edit")).Should(Equal([]rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "itmanager:" + group}}))

		provider := &itmv1.AccountProvider{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("k8s")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: ns}},
		}
		Expect(k8s.Create(ctx, provider)).To(Succeed())
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"isolated"}))
		Consistently(ingressCIDRs(ns, name)).WithTimeout(2*time.Second).Should(Equal([]string{"isolated"}), "withdrawing access never opens pods")
		Eventually(readyOf(p.Name)).Should(Equal("False/" + itmv1.ReasonForbiddenDestination))
		Expect(meta.FindStatusCondition(policyStatus(p.Name)().Conditions, itmv1.ConditionReady).Message).
			To(ContainSubstring("spec.destinations[0].namespaces: " + ns + " is the namespace of AccountProvider " + provider.Name))
		Eventually(roleBindingSubjects(ns, name+".edit")).Should(BeEmpty(), "the RoleBinding stays and binds no one there")

		By("the destination leaving the spec removes it")
		other := newNamespace(nil)
		updatePolicy(p.Name, func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Namespaces = []string{other} })
		Eventually(ingressCIDRs(ns, name)).Should(Equal([]string{"absent"}))
		Eventually(ingressCIDRs(other, name)).Should(Equal([]string{"10.29.0.1/32"}))
	})

	It("never lets a namespaceSelector reach kube-* or itmanager's own namespaces", func() {
		_, providerNS := kubernetesProvider()
		label := map[string]string{"fleet": uniqueName("f")}
		staticDevice("", label, "10.29.1.1")
		plain := newNamespace(nil)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Destinations = []itmv1.Destination{{NamespaceSelector: &metav1.LabelSelector{}}}
		})
		name := "itm-" + p.Name
		Eventually(ingressCIDRs(plain, name)).Should(Equal([]string{"10.29.1.1/32"}))
		for _, ns := range []string{"kube-system", "kube-public", testenv.OperatorNamespace, testenv.DevicesNamespace, providerNS} {
			Expect(ingressCIDRs(ns, name)()).To(Equal([]string{"absent"}), ns)
		}
		Expect(k8s.Delete(ctx, p)).To(Succeed())
	})

	It("binds a cluster-wide edit grant as RoleBindings that never reach the Secrets of protected namespaces, and follows namespaces as they appear", func() {
		group := uniqueName("devs")
		_, providerNS := kubernetesProvider()
		ordinary := newNamespace(nil)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Groups = []string{group}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ordinary}}}
			p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: "edit"}, {ClusterRole: "view"}}
		})
		member := "itmanager:" + group
		// edit is aggregated by kube-controller-manager: it grants reading Secrets.
		Eventually(mayGroup(member, "get", "secrets", ordinary)).WithTimeout(20 * time.Second).Should(BeTrue())
		for _, ns := range []string{testenv.OperatorNamespace, testenv.DevicesNamespace, providerNS, "kube-system"} {
			Expect(mayGroup(member, "get", "secrets", ns)()).To(BeFalse(), "Secrets of %s", ns)
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "itm-" + p.Name + ".edit"}, &rbacv1.RoleBinding{})).
				To(Satisfy(apierrors.IsNotFound), ns)
		}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".edit"}, &rbacv1.ClusterRoleBinding{})).To(Satisfy(apierrors.IsNotFound))
		Expect(k8s.Get(ctx, types.NamespacedName{Name: "itm-" + p.Name + ".view"}, &rbacv1.ClusterRoleBinding{})).To(Succeed(), "view is a cluster-wide role")

		By("a namespace created later gets its RoleBinding; one deleted takes it along")
		later := newNamespace(nil)
		Eventually(mayGroup(member, "get", "secrets", later)).Should(BeTrue())
		Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: later}})).To(Succeed())
		Expect(k8s.Delete(ctx, p)).To(Succeed())
	})

	It("binds only ServiceAccounts that carry the ownership mark of the person's request, never one a forged status names", func() {
		provider, providerNS := kubernetesProvider()
		other, _ := kubernetesProvider()
		victim, genuine, forger := uniqueName("victim"), uniqueName("genuine"), uniqueName("forger")
		activePerson(victim, nil, provider)
		activePerson(genuine, nil, provider)
		staticDevice(genuine, nil, "10.29.2.1")
		staticDevice(forger, nil, "10.29.2.2")
		// The forger's request waits for approval.
		Expect(k8s.Create(ctx, &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: forger},
			Spec:       itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: forger, Email: forger + "@example.com"}, AccountProviders: []string{provider}},
		})).To(Succeed())
		ns := newNamespace(nil)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.Users = []string{genuine, forger}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}}}
			p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: "view", Namespaces: []string{ns}}}
		})
		binding := "itm-" + p.Name + ".view"
		genuineSA := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: providerNS, Name: genuine}
		Eventually(roleBindingSubjects(ns, binding)).Should(Equal([]rbacv1.Subject{genuineSA}))

		By("a status naming the victim's ServiceAccount and one that does not exist, written with the manager's own identity so no status gate stands in the way")
		manager, err := client.New(managerCfg, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			r := &itmv1.OnboardingRequest{}
			if err := k8s.Get(ctx, types.NamespacedName{Name: forger}, r); err != nil {
				return err
			}
			r.Status.Phase = itmv1.OnboardingPhaseActive
			r.Status.Accounts = []itmv1.AccountStatus{
				{Provider: provider, ID: victim, State: itmv1.AccountStateProvisioned},
				{Provider: other, ID: uniqueName("ghost"), State: itmv1.AccountStateProvisioned},
			}
			return manager.Status().Update(ctx, r)
		}).Should(Succeed())
		// The policy took the forged phase in (the forger's device counts),
		// so the binding below was recomputed from the forged accounts.
		Eventually(func() int32 { return policyStatus(p.Name)().Devices.Matched }).Should(BeEquivalentTo(2))
		Consistently(roleBindingSubjects(ns, binding)).WithTimeout(3 * time.Second).Should(Equal([]rbacv1.Subject{genuineSA}))
		Expect(k8s.Delete(ctx, p)).To(Succeed())
	})
})
