package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
)

var _ = Describe("AccountProvider namespaces", func() {
	readyCondition := func(name string) func() string {
		return func() string {
			p := &itmv1.AccountProvider{}
			if err := k8s.Get(ctx, types.NamespacedName{Name: name}, p); err != nil {
				return "missing"
			}
			c := meta.FindStatusCondition(p.Status.Conditions, itmv1.ConditionReady)
			if c == nil {
				return "unset"
			}
			return string(c.Status) + "/" + c.Reason + ": " + c.Message
		}
	}
	provider := func(ns string) *itmv1.AccountProvider {
		GinkgoHelper()
		p := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: ns, TokenTTL: &metav1.Duration{Duration: time.Hour}}}}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		return p
	}
	// kstatus: which of Reconciling and Stalled the provider carries.
	abnormal := func(name string) func() []string {
		return func() []string {
			p := &itmv1.AccountProvider{}
			if err := k8s.Get(ctx, types.NamespacedName{Name: name}, p); err != nil {
				return []string{"missing"}
			}
			var out []string
			for _, t := range []string{itmv1.ConditionReconciling, itmv1.ConditionStalled} {
				if c := meta.FindStatusCondition(p.Status.Conditions, t); c != nil {
					out = append(out, t+"="+string(c.Status)+"/"+c.Reason)
				}
			}
			return out
		}
	}
	serviceAccount := func(ns, name string) error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &corev1.ServiceAccount{})
	}

	It("creates a missing namespace labelled itmanager.io/managed-namespace=true and uses it", func() {
		p := kubeProvider()
		ns := &corev1.Namespace{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: p.Spec.Kubernetes.Namespace}, ns)).To(Succeed())
		Expect(ns.Labels).To(HaveKeyWithValue(accounts.LabelManagedNamespace, "true"))
		Expect(ns.Labels).To(HaveKeyWithValue(itmv1.LabelManagedBy, itmv1.ManagedByValue))
		Expect(readyCondition(p.Name)()).To(HavePrefix("True/" + itmv1.AccountProviderReasonConnected))
		Expect(abnormal(p.Name)()).To(BeEmpty(), "a connected provider is neither Stalled nor Reconciling")
	})

	It("never uses an existing namespace nobody labelled: Ready=False naming the label and Stalled, and a request creates nothing there; labelled by an admin, it works", func() {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("team"), Labels: map[string]string{"team": "shop"}}}
		Expect(k8s.Create(ctx, ns)).To(Succeed())
		p := provider(ns.Name)
		want := fmt.Sprintf("False/%s: spec.kubernetes.namespace %q exists and is not labelled itmanager.io/managed-namespace=true",
			itmv1.AccountProviderReasonNamespaceNotManaged, ns.Name)
		Eventually(readyCondition(p.Name)).Should(HavePrefix(want))
		Expect(abnormal(p.Name)()).To(Equal([]string{itmv1.ConditionStalled + "=True/" + itmv1.AccountProviderReasonNamespaceNotManaged}),
			"only a change to the namespace fixes it: Stalled, never Reconciling")

		By("a request using it fails with the reason and creates nothing in the namespace")
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{p.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(func() string { return accountOf(r.Name, p.Name)().Message }).Should(ContainSubstring("is not labelled itmanager.io/managed-namespace=true"))
		Expect(request(r.Name).Status.Phase).NotTo(Equal(itmv1.OnboardingPhaseActive))
		Consistently(func() error { return serviceAccount(ns.Name, r.Name) }).WithTimeout(2 * time.Second).Should(Satisfy(apierrors.IsNotFound))
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns.Name, Name: accounts.KubeconfigSecret(r.Name)}, &corev1.Secret{})).
			To(Satisfy(apierrors.IsNotFound))
		got := &corev1.Namespace{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: ns.Name}, got)).To(Succeed())
		Expect(got.Labels).To(Equal(map[string]string{"team": "shop", "kubernetes.io/metadata.name": ns.Name}), "itmanager never labels it")

		By("an admin labels the namespace: the provider turns Ready and a new request gets its account there")
		got.Labels[accounts.LabelManagedNamespace] = "true"
		Expect(k8s.Update(ctx, got)).To(Succeed())
		Eventually(readyCondition(p.Name)).WithTimeout(20 * time.Second).Should(HavePrefix("True/" + itmv1.AccountProviderReasonConnected))
		Expect(abnormal(p.Name)()).To(BeEmpty(), "a connected provider is neither Stalled nor Reconciling")
		r2 := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{p.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, r2)).To(Succeed())
		Eventually(phaseOf(r2.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
		Expect(serviceAccount(ns.Name, r2.Name)).To(Succeed())
	})
})
