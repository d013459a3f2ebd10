package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

// The manager's identity as config/default, the chart and make dev create it.
var managerUser = fmt.Sprintf("system:serviceaccount:%s:%s", testenv.OperatorNamespace, testenv.ManagerServiceAccount)

var _ = Describe("The manager's own reach", func() {
	var (
		asManager client.Client
		tokens    *kubernetes.Clientset
	)
	BeforeEach(func() {
		// Impersonating the ServiceAccount's user and groups: RBAC grants
		// exactly the generated manager role, and admission sees the
		// manager.
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: managerUser,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + testenv.OperatorNamespace, "system:authenticated"}}
		var err error
		asManager, err = client.New(cfg, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		tokens, err = kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
	})
	rbacAllows := func(ns, verb, resource, sub string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource, Subresource: sub},
		}}
		Expect(k8s.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}
	secret := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniqueName("reach")}, StringData: map[string]string{"k": "v"}}
	}
	refusal := func(ns, what string) string {
		return fmt.Sprintf(`namespace %q: itmanager (user %q) may %s only in its own namespaces and in namespaces labelled itmanager.io/managed-namespace=true`, ns, managerUser, what)
	}

	It("refuses ServiceAccount, token and Secret writes in an unmarked namespace that RBAC allows, and accepts them in a marked one", func() {
		plain := newNamespace(nil)
		marked := newNamespace(map[string]string{"itmanager.io/managed-namespace": "true"})
		for _, r := range [][2]string{{"create", "secrets"}, {"update", "secrets"}, {"delete", "secrets"}, {"create", "serviceaccounts"}} {
			Expect(rbacAllows(plain, r[0], r[1], "")).To(BeTrue(), "RBAC alone lets the manager %s %s in %s", r[0], r[1], plain)
		}
		Expect(rbacAllows(plain, "create", "serviceaccounts", "token")).To(BeTrue())

		// The first refusal waits for the API server to load the policy.
		Eventually(func() error { return asManager.Create(ctx, secret(plain)) }).WithTimeout(10 * time.Second).
			Should(MatchError(ContainSubstring(refusal(plain, "create secrets"))))
		Expect(asManager.Create(ctx, secret(marked))).To(Succeed())

		By("updating and deleting a Secret someone else created there")
		for ns, allowed := range map[string]bool{plain: false, marked: true} {
			s := secret(ns)
			Expect(k8s.Create(ctx, s)).To(Succeed())
			s.StringData = map[string]string{"k": "changed"}
			update, del := asManager.Update(ctx, s), asManager.Delete(ctx, s)
			if allowed {
				Expect(update).To(Succeed())
				Expect(del).To(Succeed())
				continue
			}
			Expect(update).To(MatchError(ContainSubstring(refusal(ns, "update secrets"))))
			Expect(del).To(MatchError(ContainSubstring(refusal(ns, "delete secrets"))))
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(s), &corev1.Secret{})).To(Succeed(), "still there")
		}

		By("a label other than true does not mark a namespace")
		notTrue := newNamespace(map[string]string{"itmanager.io/managed-namespace": "false"})
		Expect(asManager.Create(ctx, secret(notTrue))).To(MatchError(ContainSubstring(refusal(notTrue, "create secrets"))))

		By("deleting what itmanager made stays allowed anywhere, so unmarking a namespace never keeps credentials alive")
		ours := secret(plain)
		ours.Labels = map[string]string{"app.kubernetes.io/managed-by": "itmanager"}
		Expect(k8s.Create(ctx, ours)).To(Succeed())
		ours.StringData = map[string]string{"k": "changed"}
		Expect(asManager.Update(ctx, ours)).To(MatchError(ContainSubstring(refusal(plain, "update secrets"))), "only deletion is exempt")
		Expect(asManager.Delete(ctx, ours)).To(Succeed())

		By("ServiceAccounts and their tokens")
		sa := func(ns string) *corev1.ServiceAccount {
			return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniqueName("reach")}}
		}
		Expect(asManager.Create(ctx, sa(plain))).To(MatchError(ContainSubstring(refusal(plain, "create serviceaccounts"))))
		Expect(asManager.Create(ctx, sa(marked))).To(Succeed())
		for ns, allowed := range map[string]bool{plain: false, marked: true} {
			existing := sa(ns)
			Expect(k8s.Create(ctx, existing)).To(Succeed())
			_, err := tokens.CoreV1().ServiceAccounts(ns).CreateToken(ctx, existing.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			if allowed {
				Expect(err).NotTo(HaveOccurred())
			} else {
				Expect(err).To(MatchError(ContainSubstring(refusal(ns, "create serviceaccounts/token"))))
			}
		}

		By("the policy binds only the manager: the admin writes there as before")
		Expect(k8s.Create(ctx, secret(plain))).To(Succeed())
	})

	It("accepts Secret writes in the operator's and the devices' namespaces, and refuses them in kube-system", func() {
		Eventually(func() error { return asManager.Create(ctx, secret("kube-system")) }).WithTimeout(10 * time.Second).
			Should(MatchError(ContainSubstring(refusal("kube-system", "create secrets"))))
		for _, ns := range []string{testenv.OperatorNamespace, testenv.DevicesNamespace} {
			s := secret(ns)
			Expect(asManager.Create(ctx, s)).To(Succeed(), ns)
			Expect(asManager.Delete(ctx, s)).To(Succeed(), ns)
		}
	})

	It("may create a namespace but never update or patch one, so it cannot mark a namespace itself", func() {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("reach")}}
		Expect(asManager.Create(ctx, ns)).To(Succeed())
		DeferCleanup(func() { _ = k8s.Delete(ctx, ns) })
		for _, verb := range []string{"update", "patch"} {
			Expect(rbacAllows("", verb, "namespaces", "")).To(BeFalse(), verb)
		}
		plain := &corev1.Namespace{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: newNamespace(nil)}, plain)).To(Succeed())
		base := plain.DeepCopy()
		plain.Labels["itmanager.io/managed-namespace"] = "true"
		err := asManager.Patch(ctx, plain, client.MergeFrom(base))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err).To(MatchError(ContainSubstring(`cannot patch resource "namespaces"`)))
		Expect(asManager.Update(ctx, plain)).To(MatchError(ContainSubstring(`cannot update resource "namespaces"`)))
	})
	It("holds Job rights only in the upgrades namespace", func() {
		for ns, want := range map[string]bool{
			testenv.UpgradesNamespace: true, testenv.OperatorNamespace: false, testenv.DevicesNamespace: false, "kube-system": false, newNamespace(nil): false,
		} {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: managerUser, Groups: []string{"system:serviceaccounts", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "batch", Resource: "jobs"},
			}}
			Expect(k8s.Create(ctx, sar)).To(Succeed())
			Expect(sar.Status.Allowed).To(Equal(want), "create jobs in %s", ns)
		}
	})
})
