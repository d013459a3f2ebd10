package controllers_test

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var _ = Describe("AccountProvider admission", func() {
	writeProviders := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"accountproviders"},
		Verbs: []string{"get", "create", "update", "patch"}}
	getSecret := func(names ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: names}
	}
	createIn := func(resources ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: resources, Verbs: []string{"create"}}
	}
	allMinting := createIn("serviceaccounts", "secrets", "serviceaccounts/token")

	// operatorSecret creates a Secret in the operator namespace.
	operatorSecret := func(key, value string) string {
		GinkgoHelper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: uniqueName("ldap")},
			Data: map[string][]byte{key: []byte(value)}}
		Expect(k8s.Create(ctx, s)).To(Succeed())
		return s.Name
	}
	// ldap is an LDAP provider for a directory nobody answers at (only
	// admission is under test), its password in Secret secret.
	ldap := func(secret string, mutate ...func(*itmv1.LDAPProviderSpec)) *itmv1.AccountProvider {
		spec := &itmv1.LDAPProviderSpec{URL: fmt.Sprintf("ldap://127.0.0.1:%d", freePort()), Insecure: true, BindDN: "cn=admin,dc=example,dc=com",
			BindPasswordSecretRef: itmv1.SecretKeyReference{Name: secret, Key: "password"}, UsersDN: "ou=people,dc=example,dc=com"}
		for _, m := range mutate {
			m(spec)
		}
		return &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ldap")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP, LDAP: spec}}
	}
	kube := func(ns string, mutate ...func(*itmv1.AccountProvider)) *itmv1.AccountProvider {
		p := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: ns}}}
		for _, m := range mutate {
			m(p)
		}
		return p
	}
	// refusedOnce waits until the API server has loaded the policies: each
	// attempt is a new object (an attempt let through before that is
	// harmless), and the first refusal must carry want.
	refusedOnce := func(c client.Client, mk func() *itmv1.AccountProvider, want string) {
		GinkgoHelper()
		Eventually(func() error { return c.Create(ctx, mk()) }).WithTimeout(15 * time.Second).Should(MatchError(ContainSubstring(want)))
	}
	managedNamespace := func() string {
		GinkgoHelper()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("users"),
			Labels: map[string]string{accounts.LabelManagedNamespace: accounts.ManagedNamespace}}}
		Expect(k8s.Create(ctx, ns)).To(Succeed())
		return ns.Name
	}

	It("requires get on the bind password Secret, in the operator namespace, to create an LDAP provider", func() {
		secret := operatorSecret("password", "s3cret")
		user := uniqueName("mallory@example.com")
		c := impersonate(user, writeProviders)
		want := fmt.Sprintf(`spec.ldap.bindPasswordSecretRef.name: user "%s" may not get Secret "%s/%s": an AccountProvider sends its value to spec.ldap.url`,
			user, testenv.OperatorNamespace, secret)
		refusedOnce(c, func() *itmv1.AccountProvider { return ldap(secret) }, want)

		By("get on a Secret of that name in another namespace does not count")
		other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("team")}}
		Expect(k8s.Create(ctx, other)).To(Succeed())
		grantIn(other.Name, user, getSecret(secret))
		Expect(c.Create(ctx, ldap(secret))).To(MatchError(ContainSubstring(want)))

		By("with get on that Secret in the operator namespace it is accepted")
		grantIn(testenv.OperatorNamespace, user, getSecret(secret))
		Expect(c.Create(ctx, ldap(secret))).To(Succeed())
	})

	It("requires get on the CA Secret too", func() {
		secret := operatorSecret("password", "s3cret")
		ca := operatorSecret("ca.crt", "not a certificate")
		user := uniqueName("mallory@example.com")
		c := impersonate(user, writeProviders)
		grantIn(testenv.OperatorNamespace, user, getSecret(secret))
		withCA := func() *itmv1.AccountProvider {
			return ldap(secret, func(l *itmv1.LDAPProviderSpec) { l.CASecretRef = &itmv1.SecretKeyReference{Name: ca, Key: "ca.crt"} })
		}
		refusedOnce(c, withCA, fmt.Sprintf(`spec.ldap.caSecretRef.name: user "%s" may not get Secret "%s/%s"`, user, testenv.OperatorNamespace, ca))
		grantIn(testenv.OperatorNamespace, user, getSecret(ca))
		Expect(c.Create(ctx, withCA())).To(Succeed())
	})

	It("re-checks the Secrets when url, bindDN or a reference changes, and only then", func() {
		secret := operatorSecret("password", "s3cret")
		other := operatorSecret("password", "another provider's password")
		editorName := uniqueName("mallory@example.com")
		editor := impersonate(editorName, writeProviders)
		var p *itmv1.AccountProvider
		Eventually(func() error {
			p = ldap(secret)
			return k8s.Create(ctx, p)
		}).Should(Succeed())

		want := fmt.Sprintf(`spec.ldap.bindPasswordSecretRef.name: user "%s" may not get Secret "%s/%s"`, editorName, testenv.OperatorNamespace, secret)
		Eventually(func() error {
			return updateAs(editor, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.URL = "ldaps://attacker.example.com" })
		}).WithTimeout(15*time.Second).Should(MatchError(ContainSubstring(want)), "a new url for the stored password")
		Expect(updateAs(editor, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.BindDN = "cn=someone,dc=example,dc=com" })).
			To(MatchError(ContainSubstring(want)), "a new bindDN")
		Expect(updateAs(editor, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.BindPasswordSecretRef.Key = "other" })).
			To(MatchError(ContainSubstring(want)), "a new key")
		Expect(updateAs(editor, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.BindPasswordSecretRef.Name = other })).
			To(MatchError(ContainSubstring(fmt.Sprintf(`may not get Secret "%s/%s"`, testenv.OperatorNamespace, other))), "another Secret")

		By("a change that sends nothing new anywhere needs no Secret rights")
		Expect(updateAs(editor, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.UsersDN = "ou=staff,dc=example,dc=com" })).To(Succeed())
		Expect(updateAs(editor, p.Name, func(o *itmv1.AccountProvider) {
			o.Labels = map[string]string{"team": "it"}
		})).To(Succeed())

		By("an author who may read the Secret can move the url")
		ownerName := uniqueName("it-admin@example.com")
		owner := impersonate(ownerName, writeProviders)
		grantIn(testenv.OperatorNamespace, ownerName, getSecret(secret))
		Expect(updateAs(owner, p.Name, func(o *itmv1.AccountProvider) { o.Spec.LDAP.URL = "ldaps://ldap2.example.com" })).To(Succeed())
	})

	It("requires create on serviceaccounts, secrets and serviceaccounts/token in a Kubernetes provider's namespace", func() {
		ns := managedNamespace()
		user := uniqueName("teamlead@example.com")
		c := impersonate(user, writeProviders)
		msg := func(resource, ns string) string {
			return fmt.Sprintf(`spec.kubernetes.namespace: user "%s" may not create %s in namespace "%s": a Kubernetes AccountProvider mints accounts there`, user, resource, ns)
		}
		refusedOnce(c, func() *itmv1.AccountProvider { return kube(ns) }, msg("serviceaccounts", ns))

		By("the defaulted namespace is the one checked")
		Expect(c.Create(ctx, kube(""))).To(MatchError(ContainSubstring(msg("serviceaccounts", accounts.DefaultUsersNamespace))))

		By("each right is needed")
		// Eventually after each grant: the API server's RBAC authorizer (an
		// informer) may not have seen it yet under load.
		grantIn(ns, user, createIn("serviceaccounts"))
		Eventually(func() error { return c.Create(ctx, kube(ns)) }).Should(MatchError(ContainSubstring(msg("secrets", ns))))
		grantIn(ns, user, createIn("secrets"))
		Eventually(func() error { return c.Create(ctx, kube(ns)) }).Should(MatchError(ContainSubstring(msg("serviceaccounts/token", ns))))
		grantIn(ns, user, createIn("serviceaccounts/token"))
		var p *itmv1.AccountProvider
		Eventually(func() error { p = kube(ns); return c.Create(ctx, p) }).Should(Succeed())

		By("its namespace never moves (every person's credentials would follow), even for someone holding the rights there; other spec changes are re-checked and accepted")
		elsewhere := managedNamespace()
		grantIn(elsewhere, user, allMinting)
		Expect(updateAs(c, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Kubernetes.Namespace = elsewhere })).
			To(MatchError(ContainSubstring("spec.kubernetes.namespace is immutable")))
		// Eventually: under load the API server's RBAC authorizer (an
		// informer) may not have seen the last grant yet.
		Eventually(func() error {
			return updateAs(c, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Kubernetes.TokenTTL = &metav1.Duration{Duration: 2 * time.Hour} })
		}).Should(Succeed())
	})

	It("requires the verb approve on onboardingrequests to make a provider default, at creation or later", func() {
		ns := managedNamespace()
		user := uniqueName("teamlead@example.com")
		c := impersonate(user, writeProviders)
		grantIn(ns, user, allMinting)
		want := fmt.Sprintf(`spec.default: user "%s" may not make AccountProvider`, user)
		// Wait for the policies with a refusal that leaves no default
		// provider behind should an attempt get through before they load.
		refusedOnce(c, func() *itmv1.AccountProvider { return kube(managedNamespace()) }, "may not create serviceaccounts")
		err := c.Create(ctx, kube(ns, func(p *itmv1.AccountProvider) { p.Spec.Default = true }))
		Expect(err).To(MatchError(ContainSubstring(want)))
		Expect(err).To(MatchError(ContainSubstring(`which requires the verb "approve" on onboardingrequests.itmanager.io`)))

		p := kube(ns)
		Expect(c.Create(ctx, p)).To(Succeed(), "not default: no approve needed")
		// A default provider would take the accounts of other specs' requests.
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8s.Delete(ctx, p))).To(Succeed()) })
		Expect(updateAs(c, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Default = true })).To(MatchError(ContainSubstring(want)))

		By("an approver (with the namespace rights) may; afterwards other changes need no approve")
		approverName := uniqueName("it-admin@example.com")
		approver := impersonate(approverName, writeProviders, approveRequests)
		grantIn(ns, approverName, allMinting)
		Expect(updateAs(approver, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Default = true })).To(Succeed())
		Expect(updateAs(c, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Kubernetes.TokenTTL = &metav1.Duration{Duration: 3 * time.Hour} })).To(Succeed())
		Expect(approver.Create(ctx, ldap(operatorSecret("password", "x")))).
			To(MatchError(ContainSubstring("spec.ldap.bindPasswordSecretRef.name")), "approve is not a Secret right")
	})
})
