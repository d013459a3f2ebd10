package controllers_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
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

	It("lets only approvers skip approval or force an offboarding", func() {
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

	It("never decides an unstamped request: an approver can neither approve nor deny it, and nothing is provisioned for it", Serial, func() {
		p := kubeProvider()
		ns := p.Spec.Kubernetes.Namespace
		approverName := uniqueName("grace@example.com")
		approver := impersonate(approverName, write, approve)
		waitAllowed(approverName, authorizationv1.ResourceAttributes{Group: "itmanager.io", Resource: "onboardingrequests", Verb: "approve"})
		waitAllowed(approverName, authorizationv1.ResourceAttributes{Group: "itmanager.io", Resource: "onboardingrequests", Subresource: "status", Verb: "update"})
		r := newRequest(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{p.Name} })
		accounts := watchHistory(&corev1.ServiceAccountList{}, ns, r.Name, func(client.Object) string { return "exists" })
		statuses := watchHistory(&itmv1.OnboardingRequestList{}, "", r.Name, func(o client.Object) string {
			st := o.(*itmv1.OnboardingRequest).Status
			return fmt.Sprintf("%s accounts=%d credentials=%v", st.Phase, len(st.Accounts), st.CredentialsSecret != nil)
		})
		createUnstamped(r)
		Expect(request(r.Name).Annotations).NotTo(HaveKey(itmv1.AnnotationRequestedBy))
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))

		By("an approver, who could decide a stamped request, can neither approve nor deny it")
		for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
			Expect(decide(approver, r, t)).To(MatchError(ContainSubstring("a request without the itmanager.io/requested-by stamp cannot be approved or denied")), t)
		}

		By("nothing is provisioned: every version of the request stays AwaitingApproval with no account, and no ServiceAccount ever exists")
		Consistently(phaseOf(r.Name)).WithTimeout(2 * time.Second).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		Expect(accounts.record()).To(BeEmpty())
		for _, v := range statuses.record() {
			Expect(v.state).To(BeElementOf(" accounts=0 credentials=false", "AwaitingApproval accounts=0 credentials=false"), statuses.String())
		}
		got := request(r.Name)
		Expect(meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionApproved)).To(BeNil())
		Expect(meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionDenied)).To(BeNil())
	})
})

// createUnstamped stores r without the requester stamp, as a request
// stored before the stamp was in force (an older itmanager, a restore from
// a backup) is: the only way the API allows is with the stamping policy
// and the creation rules unbound for a moment, so the caller must be
// Serial. Both bindings are back, and in force, when it returns.
func createUnstamped(r *itmv1.OnboardingRequest) {
	GinkgoHelper()
	objs, err := testenv.AdmissionPolicies()
	Expect(err).NotTo(HaveOccurred())
	var bindings []*unstructured.Unstructured
	for _, o := range objs {
		if (o.GetKind() == "MutatingAdmissionPolicyBinding" && strings.HasSuffix(o.GetName(), "onboarding-requester")) ||
			(o.GetKind() == "ValidatingAdmissionPolicyBinding" && strings.HasSuffix(o.GetName(), "onboarding-approval")) {
			bindings = append(bindings, o)
		}
	}
	Expect(bindings).To(HaveLen(2))
	requester := impersonate(uniqueName("probe@example.com"), rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests"}, Verbs: []string{"create"}})
	restore := func() {
		for _, b := range bindings {
			if err := k8s.Create(ctx, b.DeepCopy()); !apierrors.IsAlreadyExists(err) {
				Expect(err).NotTo(HaveOccurred())
			}
		}
		// In force again: a create is stamped, and one that skips approval
		// without the verb is refused.
		Eventually(func() error {
			probe := r.DeepCopy()
			probe.Name = uniqueName("probe")
			if err := k8s.Create(ctx, probe, client.DryRunAll); err != nil {
				return err
			}
			if probe.Annotations[itmv1.AnnotationRequestedBy] == "" {
				return fmt.Errorf("a create is not stamped yet")
			}
			probe = r.DeepCopy()
			probe.Name = uniqueName("probe")
			probe.Spec.ApprovalRequired = ptr.To(false)
			switch err := requester.Create(ctx, probe, client.DryRunAll); {
			case err == nil:
				return fmt.Errorf("approval skipped without the verb is admitted")
			case !strings.Contains(err.Error(), "spec.approvalRequired"):
				return fmt.Errorf("approval skipped without the verb is not refused by the policy yet: %w", err)
			}
			return nil
		}).WithTimeout(30 * time.Second).Should(Succeed())
	}
	DeferCleanup(restore)
	for _, b := range bindings {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, b.DeepCopy()))).To(Succeed())
	}
	Eventually(func() error {
		probe := r.DeepCopy()
		if err := k8s.Create(ctx, probe, client.DryRunAll); err != nil {
			return err
		}
		if _, stamped := probe.Annotations[itmv1.AnnotationRequestedBy]; stamped {
			return fmt.Errorf("a create is still stamped")
		}
		return nil
	}).WithTimeout(30 * time.Second).Should(Succeed())
	Expect(k8s.Create(ctx, r)).To(Succeed())
	restore()
}

// decideAt sets condType on name's status as c, claiming generation gen
// was reviewed; it retries only when a status write of the controller
// came in between.
func decideAt(c client.Client, name, condType string, gen int64) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &itmv1.OnboardingRequest{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, cur); err != nil {
			return err
		}
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: "ByTest", Message: "checked",
			ObservedGeneration: gen})
		return c.Status().Update(ctx, cur)
	})
}

// updateStatusAs changes name's status as c.
func updateStatusAs(c client.Client, name string, mutate func(*itmv1.OnboardingRequest)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &itmv1.OnboardingRequest{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, cur); err != nil {
			return err
		}
		mutate(cur)
		return c.Status().Update(ctx, cur)
	})
}

// asManager is a client authenticated as itmanager's manager.
func asManager() client.Client {
	GinkgoHelper()
	c, err := client.New(managerCfg, client.Options{Scheme: testenv.Scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

var _ = Describe("OnboardingRequest decision, status and finalizer admission", func() {
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
	// create makes r as c once the API server has loaded the policies.
	create := func(c client.Client, r *itmv1.OnboardingRequest) {
		GinkgoHelper()
		Eventually(func() error { return c.Create(ctx, r.DeepCopy()) }).WithTimeout(10 * time.Second).Should(Succeed())
	}

	It("accepts a decision only for the generation stored now, and keeps it unchanged afterwards", func() {
		requester := impersonate(uniqueName("alice@example.com"), write)
		approver := impersonate(uniqueName("bob@example.com"), write, approve)
		r := newRequest()
		create(requester, r)
		By("the requester changes the request after the approver read it: generation 2")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Groups = append(o.Spec.Groups, "admins") })).To(Succeed())
		Expect(request(r.Name).Generation).To(Equal(int64(2)))

		stale := `status.conditions[Approved].observedGeneration: a decision is of what the decider saw and must be the current metadata.generation of the request, 2`
		Expect(decideAt(approver, r.Name, itmv1.OnboardingConditionApproved, 1)).To(MatchError(ContainSubstring(stale)))
		Expect(decideAt(approver, r.Name, itmv1.OnboardingConditionApproved, 0)).To(MatchError(ContainSubstring(stale)), "no observedGeneration is no generation")
		Expect(decideAt(approver, r.Name, itmv1.OnboardingConditionDenied, 3)).To(MatchError(ContainSubstring(
			"status.conditions[Denied].observedGeneration")))
		Expect(meta.FindStatusCondition(request(r.Name).Status.Conditions, itmv1.OnboardingConditionApproved)).To(BeNil())

		By("positive control: the current generation is accepted")
		Expect(decideAt(approver, r.Name, itmv1.OnboardingConditionApproved, 2)).To(Succeed())

		By("once set, its observedGeneration is carried unchanged, even by an approver")
		Expect(updateStatusAs(approver, r.Name, func(o *itmv1.OnboardingRequest) {
			for i := range o.Status.Conditions {
				if o.Status.Conditions[i].Type == itmv1.OnboardingConditionApproved {
					o.Status.Conditions[i].ObservedGeneration = 3
				}
			}
		})).To(MatchError(ContainSubstring("never removed or changed once set")))
		By("and the controller's own status writes carry it too")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Offboard = true })).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		got := request(r.Name)
		Expect(got.Status.ObservedGeneration).To(Equal(int64(3)))
		Expect(meta.FindStatusCondition(got.Status.Conditions, itmv1.OnboardingConditionApproved).ObservedGeneration).To(Equal(int64(2)))
	})

	It("never takes Approved and Denied in one write, nor a decision that is not True, so a request is never wedged", func() {
		requester := impersonate(uniqueName("carol@example.com"), write)
		approver := impersonate(uniqueName("dan@example.com"), write, approve)
		r := newRequest()
		create(requester, r)
		both := func(o *itmv1.OnboardingRequest) {
			for _, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
				meta.SetStatusCondition(&o.Status.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: "ByTest", Message: "both",
					ObservedGeneration: o.Generation})
			}
		}
		Expect(updateStatusAs(approver, r.Name, both)).To(MatchError(ContainSubstring(
			"status.conditions: Approved and Denied were added in one write; a request is approved or denied, never both")))
		Expect(updateStatusAs(k8s, r.Name, both)).To(MatchError(ContainSubstring("never both")), "not even the admin")
		Expect(updateStatusAs(approver, r.Name, func(o *itmv1.OnboardingRequest) {
			meta.SetStatusCondition(&o.Status.Conditions, metav1.Condition{Type: itmv1.OnboardingConditionApproved, Status: metav1.ConditionFalse,
				Reason: "ByTest", Message: "not yet", ObservedGeneration: o.Generation})
		})).To(MatchError(ContainSubstring("status.conditions: an Approved or Denied condition is added with status True")),
			"a decision that is not True could never be changed and would wedge the request")

		By("positive control: Denied alone is taken; the controller still writes status and deletion finishes")
		Expect(decide(approver, r.Name, itmv1.OnboardingConditionDenied)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseFailed))
		Expect(k8s.Delete(ctx, request(r.Name))).To(Succeed())
		Eventually(requestGone(r.Name)).Should(BeTrue())
	})

	It("lets only itmanager write phase, accounts, devices, credentialsSecret and defaultProviders; approvers only decide", func() {
		requester := impersonate(uniqueName("erin@example.com"), write)
		approverName := uniqueName("frank@example.com")
		approver := impersonate(approverName, write, approve)
		// Its role may reach the authorizer after the first write below.
		waitAllowed(approverName, authorizationv1.ResourceAttributes{Group: "itmanager.io", Resource: "onboardingrequests", Subresource: "status", Verb: "update"})
		r := newRequest()
		create(requester, r)
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))

		forgeries := []struct {
			field  string
			mutate func(*itmv1.OnboardingRequest)
		}{
			{"status.phase", func(o *itmv1.OnboardingRequest) { o.Status.Phase = itmv1.OnboardingPhaseActive }},
			{"status.accounts", func(o *itmv1.OnboardingRequest) {
				o.Status.Accounts = []itmv1.AccountStatus{{Provider: "kubernetes", ID: "someone-else", State: itmv1.AccountStateProvisioned}}
			}},
			{"status.devices", func(o *itmv1.OnboardingRequest) { o.Status.Devices = []string{"lt-0001"} }},
			{"status.credentialsSecret", func(o *itmv1.OnboardingRequest) {
				o.Status.CredentialsSecret = &itmv1.ObjectReference{Namespace: "itmanager-users", Name: "someone-else-kubeconfig"}
			}},
			{"status.defaultProviders", func(o *itmv1.OnboardingRequest) {
				o.Status.DefaultProviders = &itmv1.DefaultProviders{Names: []string{"team-x"}, FixedAt: metav1.Now()}
			}},
		}
		for _, f := range forgeries {
			By("an approver writing " + f.field + " is refused")
			Expect(updateStatusAs(approver, r.Name, f.mutate)).To(MatchError(ContainSubstring(
				f.field + `: user "` + approverName + `" may not write it: only itmanager (system:serviceaccount:itmanager-system:itmanager-controller-manager) writes`)))
			Expect(updateStatusAs(requester, r.Name, f.mutate)).To(MatchError(ContainSubstring(f.field + ": user")))
			Expect(updateStatusAs(k8s, r.Name, f.mutate)).To(MatchError(ContainSubstring(f.field+": user")), "not even the admin")
		}
		By("an approver writing another condition is refused")
		Expect(updateStatusAs(approver, r.Name, func(o *itmv1.OnboardingRequest) {
			meta.SetStatusCondition(&o.Status.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Forged", ObservedGeneration: o.Generation})
		})).To(MatchError(ContainSubstring(`status: user "` + approverName + `" may only add the Approved or Denied condition`)))
		Expect(phaseOf(r.Name)()).To(Equal(itmv1.OnboardingPhaseAwaitingApproval))

		By("positive controls: the manager writes status; the approver adds Approved")
		Expect(updateStatusAs(asManager(), r.Name, func(o *itmv1.OnboardingRequest) {
			o.Status.Phase = itmv1.OnboardingPhasePending
		})).To(Succeed())
		Expect(phaseOf(r.Name)()).To(Equal(itmv1.OnboardingPhasePending), "written by the manager")
		Expect(decide(approver, r.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
	})

	It("on an approved request, guards startDate and lets the requester only set or shorten endDate", func() {
		requesterName := uniqueName("grace@example.com")
		requester := impersonate(requesterName, write)
		approver := impersonate(uniqueName("heidi@example.com"), write, approve)
		start := metav1.NewTime(time.Now().Add(48 * time.Hour).Truncate(time.Second))
		at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(start.Add(d)); return &t }
		r := newRequest(func(r *itmv1.OnboardingRequest) { r.Spec.StartDate = &start })
		create(requester, r)

		By("before approval the requester may move startDate")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.StartDate = at(time.Hour) })).To(Succeed())
		Expect(decide(approver, r.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseScheduled))

		By("after approval the requester may not move or remove startDate")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.StartDate = at(-24 * time.Hour) })).To(MatchError(ContainSubstring(
			`spec: the request is approved; changing person, groups, accountProviders, devices, startDate or approvalRequired requires the verb "approve" held by someone other than the requester ` + requesterName)))
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.StartDate = nil })).To(MatchError(ContainSubstring("startDate")))

		By("the requester may set an endDate and move it earlier")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = at(30 * 24 * time.Hour) })).To(Succeed())
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = at(20 * 24 * time.Hour) })).To(Succeed())
		By("but not extend or remove it")
		endMsg := `spec.endDate: the request is approved; user "` + requesterName + `" may only set an endDate or move it earlier: removing or extending it requires the verb "approve" held by someone other than the requester`
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = at(40 * 24 * time.Hour) })).To(MatchError(ContainSubstring(endMsg)))
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = nil })).To(MatchError(ContainSubstring(endMsg)))
		Expect(request(r.Name).Spec.EndDate.Time).To(BeTemporally("==", at(20*24*time.Hour).Time))

		By("positive control: another approver extends endDate and moves startDate")
		Expect(updateAs(approver, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = at(40 * 24 * time.Hour) })).To(Succeed())
		Expect(updateAs(approver, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.StartDate = at(2 * time.Hour) })).To(Succeed())

		By("a requester who holds the verb is still the requester")
		selfName := uniqueName("ivan@example.com")
		self := impersonate(selfName, write, approve)
		mine := newRequest(func(r *itmv1.OnboardingRequest) { r.Spec.StartDate = &start; r.Spec.EndDate = at(24 * time.Hour) })
		create(self, mine)
		Expect(decide(approver, mine.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
		Expect(updateAs(self, mine.Name, func(o *itmv1.OnboardingRequest) { o.Spec.StartDate = at(-time.Hour) })).To(MatchError(ContainSubstring("held by someone other than the requester " + selfName)))
		Expect(updateAs(self, mine.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = nil })).To(MatchError(ContainSubstring("spec.endDate: the request is approved")))
		Expect(updateAs(self, mine.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Offboard = true })).To(Succeed(), "offboard stays open to the requester")
	})

	It("guards a request that skipped approval: widening it needs the verb", func() {
		writerName := uniqueName("judy@example.com")
		writer := impersonate(writerName, write)
		approver := impersonate(uniqueName("ken@example.com"), write, approve)
		r := newRequest(func(r *itmv1.OnboardingRequest) {
			r.Spec.ApprovalRequired = ptr.To(false)
			r.Spec.EndDate = &metav1.Time{Time: time.Now().Add(24 * time.Hour).Truncate(time.Second)}
		})
		create(approver, r)
		skipped := `spec: the request skipped approval (spec.approvalRequired is false); user "` + writerName + `" may not change person, groups`
		Expect(updateAs(writer, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Groups = append(o.Spec.Groups, "admins") })).To(MatchError(ContainSubstring(skipped)))
		Expect(updateAs(writer, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = nil })).To(MatchError(ContainSubstring(skipped)))
		Expect(updateAs(writer, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Person.Title = "Engineer" })).To(MatchError(ContainSubstring(skipped)))
		By("positive controls: the writer may shorten it; an approver, the creator included, may widen it")
		Expect(updateAs(writer, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.EndDate = &metav1.Time{Time: o.Spec.EndDate.Add(-time.Hour)} })).To(Succeed())
		Expect(updateAs(approver, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Groups = append(o.Spec.Groups, "admins") })).To(Succeed())
	})

	It("lets only itmanager remove the offboarding finalizer, so deleting a request always offboards first", func() {
		requesterName := uniqueName("liam@example.com")
		requester := impersonate(requesterName, write, rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests"}, Verbs: []string{"delete"}})
		r := newRequest()
		create(requester, r)
		Eventually(func() []string { return request(r.Name).Finalizers }).Should(ContainElement("itmanager.io/offboarding"))
		strip := func(o *itmv1.OnboardingRequest) { controllerutil.RemoveFinalizer(o, "itmanager.io/offboarding") }
		Expect(updateAs(requester, r.Name, strip)).To(MatchError(ContainSubstring(
			`metadata.finalizers: user "` + requesterName + `" may not remove itmanager.io/offboarding: only itmanager (system:serviceaccount:itmanager-system:itmanager-controller-manager) removes it`)))
		Expect(updateAs(k8s, r.Name, strip)).To(MatchError(ContainSubstring("may not remove itmanager.io/offboarding")), "not even the admin")
		By("the requester's other edits still go through")
		Expect(updateAs(requester, r.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Person.Title = "Engineer" })).To(Succeed())

		By("positive control: deleting it offboards, then itmanager removes the finalizer")
		Expect(requester.Delete(ctx, request(r.Name))).To(Succeed())
		Eventually(requestGone(r.Name)).Should(BeTrue())
	})
})
