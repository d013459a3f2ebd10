package controllers_test

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var (
	writePolicies = rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"accesspolicies"}, Verbs: []string{"get", "create", "update", "delete"}}
	// writeNetworkPolicies is what an AccessPolicy does in a destination.
	writeNetworkPolicies = rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"create", "update"}}
)

func bindRule(roles ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{rbacv1.GroupName}, Resources: []string{"clusterroles"}, Verbs: []string{"bind"}, ResourceNames: roles}
}

var _ = Describe("AccessPolicy admission: NetworkPolicy rights in the destinations", func() {
	named := func(namespaces ...string) *itmv1.AccessPolicy {
		return &itmv1.AccessPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("np")},
			Spec: itmv1.AccessPolicySpec{
				Subjects:     itmv1.Subjects{Users: []string{uniqueName("nobody")}},
				Destinations: []itmv1.Destination{{Namespaces: namespaces}},
			},
		}
	}

	It("refuses creating a policy whose author may not create and update NetworkPolicies in a named destination, naming the field, the user and the namespace", func() {
		shop, wiki := newNamespace(nil), newNamespace(nil)
		user := uniqueName("author")
		author := impersonate(user, writePolicies)
		grantIn(shop, user, writeNetworkPolicies)
		// Only create in wiki: update is missing, which is refused as well.
		grantIn(wiki, user, rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"create"}})

		Eventually(func() error { return author.Create(ctx, named(shop, wiki)) }).Should(MatchError(ContainSubstring(
			fmt.Sprintf(`spec.destinations[0].namespaces[1]: user %q may not write NetworkPolicies in namespace %q: an AccessPolicy writes them on its author's behalf, which requires create and update on networkpolicies there`, user, wiki))))
		err := author.Create(ctx, named("kube-system"))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf(`spec.destinations[0].namespaces[0]: user %q may not write NetworkPolicies in namespace "kube-system"`, user))))

		By("the positive control: with both rights in both namespaces")
		Expect(author.Create(ctx, named(shop))).To(Succeed())
		grantIn(wiki, user, writeNetworkPolicies)
		Expect(author.Create(ctx, named(shop, wiki))).To(Succeed())
	})

	It("requires the rights in namespaces a change removes, for every spec edit, and for none of metadata edits or deletion", func() {
		shop, wiki := newNamespace(nil), newNamespace(nil)
		p := named(shop, wiki)
		Expect(k8s.Create(ctx, p)).To(Succeed())
		user := uniqueName("editor")
		editor := impersonate(user, writePolicies)
		grantIn(shop, user, writeNetworkPolicies)

		Eventually(func() error {
			return updateAs(editor, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Destinations[0].Namespaces = []string{shop} })
		}).Should(MatchError(ContainSubstring(fmt.Sprintf(`spec.destinations[0].namespaces[1] (before this change): user %q may not write NetworkPolicies in namespace %q`, user, wiki))))
		Expect(updateAs(editor, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Posture = &itmv1.Posture{RequireUpToDate: true} })).
			To(MatchError(ContainSubstring(fmt.Sprintf(`spec.destinations[0].namespaces[1]: user %q may not write NetworkPolicies in namespace %q`, user, wiki))),
				"a posture change rewrites the NetworkPolicies in every destination")
		Expect(updateAs(editor, p.Name, func(cur *itmv1.AccessPolicy) { cur.Labels = map[string]string{"team": "shop"} })).
			To(Succeed(), "a metadata edit writes no NetworkPolicy")

		By("the positive control: with the rights in the namespace being removed")
		grantIn(wiki, user, writeNetworkPolicies)
		Expect(updateAs(editor, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Posture = &itmv1.Posture{RequireUpToDate: true} })).To(Succeed())
		Expect(updateAs(editor, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Destinations[0].Namespaces = []string{shop} })).To(Succeed())

		By("deleting needs only the right to delete AccessPolicies")
		deleter := impersonate(uniqueName("deleter"), writePolicies)
		Expect(deleter.Delete(ctx, &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: p.Name}})).To(Succeed())
	})

	It("requires NetworkPolicy rights cluster-wide for a namespaceSelector before or after the change", func() {
		shop := newNamespace(nil)
		user := uniqueName("selector")
		author := impersonate(user, writePolicies)
		grantIn(shop, user, writeNetworkPolicies)
		sel := func(p *itmv1.AccessPolicy) *itmv1.AccessPolicy {
			p.Spec.Destinations = append(p.Spec.Destinations, itmv1.Destination{NamespaceSelector: &metav1.LabelSelector{}})
			return p
		}
		Eventually(func() error { return author.Create(ctx, sel(named(shop))) }).Should(MatchError(ContainSubstring(fmt.Sprintf(
			`spec.destinations[1].namespaceSelector: user %q may not write NetworkPolicies in every namespace: a namespaceSelector lets an AccessPolicy write them in any namespace it matches, on its author's behalf, which requires create and update on networkpolicies cluster-wide`, user))))

		By("turning an admin's selector policy into named namespaces")
		p := sel(named(shop))
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(updateAs(author, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Destinations = cur.Spec.Destinations[:1] })).
			To(MatchError(ContainSubstring(fmt.Sprintf(`spec.destinations[1].namespaceSelector (before this change): user %q may not write NetworkPolicies in every namespace`, user))))

		By("the positive control: with the rights cluster-wide")
		wide := uniqueName("platform")
		platform := impersonate(wide, writePolicies, writeNetworkPolicies)
		Expect(platform.Create(ctx, sel(named(shop)))).To(Succeed())
		Expect(updateAs(platform, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Destinations = cur.Spec.Destinations[:1] })).To(Succeed())
	})

	It("caps the named destination namespaces so every one of them can be checked", func() {
		var many []string
		for i := range itmv1.MaxNamedDestinationNamespaces {
			many = append(many, fmt.Sprintf("ns-%d", i))
		}
		p := named(many[:8]...)
		p.Spec.Destinations = append(p.Spec.Destinations, itmv1.Destination{Namespaces: append(many[8:], "one-too-many")})
		Expect(k8s.Create(ctx, p)).To(MatchError(ContainSubstring("spec.destinations: at most 16 namespaces may be named across all destinations")))
		p.Spec.Destinations[1].Namespaces = many[8:]
		Expect(k8s.Create(ctx, p)).To(Succeed())
	})
})

var _ = Describe("AccessPolicy admission: subjects and mode widen every grant", func() {
	It("re-checks bind on every role when subjects or mode change, and only new entries otherwise", func() {
		shop := newNamespace(nil)
		p := &itmv1.AccessPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("widen")},
			Spec: itmv1.AccessPolicySpec{
				Mode:             itmv1.AccessModeAudit,
				Subjects:         itmv1.Subjects{Groups: []string{"sre"}},
				Destinations:     []itmv1.Destination{{Namespaces: []string{shop}}},
				KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view", Namespaces: []string{shop}}, {ClusterRole: "edit", Namespaces: []string{shop}}},
			},
		}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		user := uniqueName("member")
		// May edit the policy and write its NetworkPolicies, and bind view, not edit.
		member := impersonate(user, writePolicies, bindRule("view"))
		grantIn(shop, user, writeNetworkPolicies)
		update := func(mutate func(*itmv1.AccessPolicy)) error { return updateAs(member, p.Name, mutate) }

		refusal := func(i int, role string) string {
			return fmt.Sprintf(`spec.kubernetesAccess[%d].clusterRole: user %q may not bind ClusterRole %q: changing spec.subjects or spec.mode widens every role the policy grants, which requires the "bind" verb on each`, i, user, role)
		}
		Eventually(func() error {
			return update(func(cur *itmv1.AccessPolicy) { cur.Spec.Subjects.Users = []string{user} })
		}).Should(MatchError(ContainSubstring(refusal(1, "edit"))), "adding themselves to the subjects")
		Expect(update(func(cur *itmv1.AccessPolicy) { cur.Spec.Subjects.Groups = []string{"sre", "mine"} })).
			To(MatchError(ContainSubstring(refusal(1, "edit"))), "adding their group")
		Expect(update(func(cur *itmv1.AccessPolicy) { cur.Spec.Mode = itmv1.AccessModeEnforce })).
			To(MatchError(ContainSubstring(refusal(1, "edit"))), "switching Audit to Enforce")
		Expect(update(func(cur *itmv1.AccessPolicy) { cur.Spec.Posture = &itmv1.Posture{RequireUpToDate: true} })).
			To(Succeed(), "a posture edit re-checks no role someone else granted")

		By("the positive control: holding bind on every role")
		grantor := uniqueName("grantor")
		owner := impersonate(grantor, writePolicies, bindRule("view", "edit"))
		grantIn(shop, grantor, writeNetworkPolicies)
		Expect(updateAs(owner, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Subjects.Users = []string{grantor} })).To(Succeed())
		Expect(updateAs(owner, p.Name, func(cur *itmv1.AccessPolicy) { cur.Spec.Mode = itmv1.AccessModeEnforce })).To(Succeed())
		Expect(k8s.Delete(ctx, p)).To(Succeed())
	})
})
