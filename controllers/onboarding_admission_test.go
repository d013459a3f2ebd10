package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var _ = Describe("OnboardingRequest approval admission", func() {
	write := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests", "onboardingrequests/status"},
		Verbs: []string{"get", "create", "update", "patch"}}
	approve := rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests"}, Verbs: []string{"approve"}}

	newRequest := func(mutate ...func(*itmv1.OnboardingRequest)) *itmv1.OnboardingRequest {
		r := &itmv1.OnboardingRequest{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("joiner")},
			Spec: itmv1.OnboardingRequestSpec{
				Person: itmv1.Person{DisplayName: "New Joiner", Email: "joiner@example.com"},
				Groups: []string{"engineering"},
			},
		}
		for _, m := range mutate {
			m(r)
		}
		return r
	}
	decide := func(c client.Client, r *itmv1.OnboardingRequest, t string) error {
		return decide(c, r.Name, t)
	}

	It("stamps the requester, who can then neither forge it, nor approve, nor change the request once approved", func() {
		requester := impersonate(uniqueName("alice@example.com"), write)
		approver := impersonate(uniqueName("bob@example.com"), write, approve)
		bystander := impersonate(uniqueName("carol@example.com"), write)

		// The admission policies take effect once the API server loaded them.
		r := newRequest(func(r *itmv1.OnboardingRequest) {
			r.Annotations = map[string]string{itmv1.AnnotationRequestedBy: "someone-else"}
		})
		Eventually(func() error { return requester.Create(ctx, r.DeepCopy()) }).WithTimeout(10 * time.Second).Should(Succeed())
		stored := &itmv1.OnboardingRequest{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(r), stored)).To(Succeed())
		requesterName := stored.Annotations[itmv1.AnnotationRequestedBy]
		Expect(requesterName).To(HavePrefix("alice@example.com"), "the forged value is replaced by the caller")

		By("changing the stamp afterwards has no effect, and a replace without it keeps it")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Annotations[itmv1.AnnotationRequestedBy] = "mallory" })).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(r), stored)).To(Succeed())
		Expect(stored.Annotations).To(HaveKeyWithValue(itmv1.AnnotationRequestedBy, requesterName), "carried over from the stored object")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) {
			delete(o.Annotations, itmv1.AnnotationRequestedBy)
			o.Spec.Person.Title = "Engineer"
		})).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(r), stored)).To(Succeed())
		Expect(stored.Annotations).To(HaveKeyWithValue(itmv1.AnnotationRequestedBy, requesterName))

		By("the requester cannot approve; a user without the verb cannot; an approver can")
		Expect(decide(requester, r, itmv1.OnboardingConditionApproved)).To(MatchError(ContainSubstring("requested " + r.Name + " and may not approve or deny it")))
		Expect(decide(bystander, r, itmv1.OnboardingConditionApproved)).To(MatchError(ContainSubstring(`requires the verb "approve"`)))
		Expect(decide(approver, r, itmv1.OnboardingConditionApproved)).To(Succeed())

		By("nobody removes or flips the decision, not even an approver or the admin")
		for _, c := range []client.Client{approver, k8s} {
			Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cur := &itmv1.OnboardingRequest{}
				Expect(c.Get(ctx, client.ObjectKeyFromObject(r), cur)).To(Succeed())
				meta.RemoveStatusCondition(&cur.Status.Conditions, itmv1.OnboardingConditionApproved)
				return c.Status().Update(ctx, cur)
			})).To(MatchError(ContainSubstring("never removed or changed once set")))
		}
		Expect(decide(approver, r, itmv1.OnboardingConditionDenied)).To(MatchError(ContainSubstring("never decided again")))

		By("after approval the requester may not add a group, but may still offboard")
		addAdmins := func(o *itmv1.OnboardingRequest) { o.Spec.Groups = append(o.Spec.Groups, "admins") }
		Expect(updateAs(requester, r.Name, addAdmins)).To(MatchError(ContainSubstring("the request is approved")))
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Offboard = true })).To(Succeed())
		Expect(updateAs(approver, r.Name, addAdmins)).To(Succeed(), "another approver may change an approved request")
	})

	It("lets only approvers skip approval or force an offboarding, and never decides an unstamped request", func() {
		requester := impersonate(uniqueName("dave@example.com"), write)
		approver := impersonate(uniqueName("erin@example.com"), write, approve)
		Eventually(func() error {
			return requester.Create(ctx, newRequest(func(r *itmv1.OnboardingRequest) { r.Spec.ApprovalRequired = ptr.To(false) }))
		}).WithTimeout(10 * time.Second).Should(MatchError(ContainSubstring("spec.approvalRequired")))
		Expect(approver.Create(ctx, newRequest(func(r *itmv1.OnboardingRequest) { r.Spec.ApprovalRequired = ptr.To(false) }))).To(Succeed())

		r := newRequest()
		Expect(requester.Create(ctx, r)).To(Succeed())
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.ApprovalRequired = ptr.To(false) })).
			To(MatchError(ContainSubstring("spec.approvalRequired")))
		force := func(o *itmv1.OnboardingRequest) { o.Annotations[itmv1.AnnotationForceOffboard] = "true" }
		Expect(updateAs(requester, r.Name, force)).To(MatchError(ContainSubstring("itmanager.io/force-offboard")))
		Expect(updateAs(approver, r.Name, force)).To(Succeed())
	})
})
