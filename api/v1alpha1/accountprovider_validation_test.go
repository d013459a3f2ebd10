package v1alpha1_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// ldapProvider is an LDAP AccountProvider with ldapSpec, changed by mutate.
func ldapProvider(mutate func(*itmv1.LDAPProviderSpec)) *itmv1.AccountProvider {
	return kubernetesProvider(func(a *itmv1.AccountProvider) {
		a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
		if mutate != nil {
			mutate(a.Spec.LDAP)
		}
	})
}

var _ = Describe("AccountProvider token lifetime and LDAP transport", func() {
	DescribeTable("accepts",
		func(a *itmv1.AccountProvider) { Expect(k8s.Create(ctx, a)).To(Succeed()) },
		Entry("a token TTL of exactly 720h", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.TokenTTL = dur(720 * time.Hour) })),
		Entry("a token TTL of 10m", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.TokenTTL = dur(10 * time.Minute) })),
		Entry("ldaps:// without a CA", ldapProvider(nil)),
		Entry("ldap:// with StartTLS (caSecretRef set)", ldapProvider(func(l *itmv1.LDAPProviderSpec) {
			l.URL = "ldap://ldap.example.com:389"
			l.CASecretRef = &itmv1.SecretKeyReference{Name: "ldap-ca", Key: "ca.crt"}
		})),
		Entry("ldap:// with insecure: true", ldapProvider(func(l *itmv1.LDAPProviderSpec) {
			l.URL = "ldap://127.0.0.1:389"
			l.Insecure = true
		})),
	)

	DescribeTable("rejects", expectRejected,
		Entry("a token TTL over 720h", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.TokenTTL = dur(721 * time.Hour) }),
			"spec.kubernetes.tokenTTL", "must be at most 720h"),
		Entry("a one-year token TTL", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.TokenTTL = dur(8760 * time.Hour) }),
			"spec.kubernetes.tokenTTL", "must be at most 720h"),
		Entry("ldap:// without StartTLS or insecure", ldapProvider(func(l *itmv1.LDAPProviderSpec) { l.URL = "ldap://ldap.example.com:389" }),
			"spec.ldap.url", "ldap:// sends the bind password in clear text", "spec.ldap.insecure: true"),
	)

	It("refuses an update that changes a provider's type or a Kubernetes provider's namespace", func() {
		a := kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.Namespace = "team-a-users" })
		Expect(k8s.Create(ctx, a)).To(Succeed())
		a.Spec.Kubernetes.Namespace = "team-b-users"
		Expect(k8s.Update(ctx, a)).To(MatchError(ContainSubstring("spec.kubernetes.namespace is immutable")))
		a.Spec.Kubernetes.Namespace = "team-a-users"
		a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
		Expect(k8s.Update(ctx, a)).To(MatchError(ContainSubstring("spec.type is immutable")))
	})

	It("refuses an update that moves a stored provider from ldaps:// to plain ldap://", func() {
		a := ldapProvider(func(l *itmv1.LDAPProviderSpec) { l.URL = "ldaps://ldap.example.com" })
		Expect(k8s.Create(ctx, a)).To(Succeed())
		a.Spec.LDAP.URL = "ldap://ldap.example.com"
		err := k8s.Update(ctx, a)
		Expect(err).To(MatchError(ContainSubstring("spec.ldap.url: Invalid value")))
		Expect(err).To(MatchError(ContainSubstring("clear text")))
	})
})
