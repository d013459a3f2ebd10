package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

var (
	writeRequests = rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests", "onboardingrequests/status"},
		Verbs: []string{"get", "create", "update", "patch"}}
	approveRequests = rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"onboardingrequests"}, Verbs: []string{"approve"}}
)

// kubeProvider creates a Kubernetes AccountProvider in its own namespace
// and waits for it to be Ready.
func kubeProvider() *itmv1.AccountProvider {
	GinkgoHelper()
	p := &itmv1.AccountProvider{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
		Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
			Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: uniqueName("users"), TokenTTL: &metav1.Duration{Duration: time.Hour}}},
	}
	Expect(k8s.Create(ctx, p)).To(Succeed())
	Eventually(providerReady(p.Name)).Should(Equal(metav1.ConditionTrue))
	return p
}

// ldapProvider creates an LDAP AccountProvider for the test slapd, its
// bind password in a Secret of the operator namespace.
func ldapProvider(mutate func(*itmv1.LDAPProviderSpec)) *itmv1.AccountProvider {
	GinkgoHelper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: uniqueName("ldap-bind")},
		Data: map[string][]byte{"password": []byte(ldapServer.AdminPassword)}}
	Expect(k8s.Create(ctx, secret)).To(Succeed())
	// The test slapd listens on plain ldap:// on loopback, without TLS.
	spec := &itmv1.LDAPProviderSpec{URL: ldapServer.URL, Insecure: true, BindDN: ldapServer.AdminDN,
		BindPasswordSecretRef: itmv1.SecretKeyReference{Name: secret.Name, Key: "password"},
		UsersDN:               ldapServer.PeopleDN, GroupsDN: ldapServer.GroupsDN}
	if mutate != nil {
		mutate(spec)
	}
	p := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ldap")},
		Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP, LDAP: spec}}
	Expect(k8s.Create(ctx, p)).To(Succeed())
	return p
}

func providerReady(name string) func() metav1.ConditionStatus {
	return func() metav1.ConditionStatus {
		p := &itmv1.AccountProvider{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, p); err != nil {
			return "missing"
		}
		if c := meta.FindStatusCondition(p.Status.Conditions, "Ready"); c != nil {
			return c.Status
		}
		return "unset"
	}
}

func joiner(mutate func(*itmv1.OnboardingRequest)) *itmv1.OnboardingRequest {
	r := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("joiner")},
		Spec: itmv1.OnboardingRequestSpec{
			Person: itmv1.Person{DisplayName: "Grace Hopper", Email: "grace@example.com", Title: "Engineer", EmploymentType: itmv1.EmploymentTypeEmployee},
			Groups: []string{"engineering"},
		},
	}
	if mutate != nil {
		mutate(r)
	}
	return r
}

func request(name string) *itmv1.OnboardingRequest {
	GinkgoHelper()
	r := &itmv1.OnboardingRequest{}
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, r)).To(Succeed())
	return r
}

func phaseOf(name string) func() itmv1.OnboardingPhase {
	return func() itmv1.OnboardingPhase {
		r := &itmv1.OnboardingRequest{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, r); err != nil {
			return itmv1.OnboardingPhase("missing: " + err.Error())
		}
		return r.Status.Phase
	}
}

func requestGone(name string) func() bool {
	return func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: name}, &itmv1.OnboardingRequest{}))
	}
}

func accountOf(name, provider string) func() itmv1.AccountStatus {
	return func() itmv1.AccountStatus {
		for _, a := range request(name).Status.Accounts {
			if a.Provider == provider {
				return a
			}
		}
		return itmv1.AccountStatus{}
	}
}

// tokenExpiries polls the token expiry annotation of a credentials Secret
// until the spec ends and returns each distinct value seen, in order, with
// the onboarding clock's time when a poll first saw it.
func tokenExpiries(namespace, name string) func() []seen {
	var mu sync.Mutex
	var values []seen
	pctx, cancel := context.WithCancel(ctx)
	DeferCleanup(cancel)
	go func() {
		for pctx.Err() == nil {
			s := &corev1.Secret{}
			if err := k8s.Get(pctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err == nil {
				if v := s.Annotations[accounts.AnnotationTokenExpires]; v != "" {
					mu.Lock()
					if len(values) == 0 || values[len(values)-1].state != v {
						values = append(values, seen{state: v, at: onbClock.Now()})
					}
					mu.Unlock()
				}
			}
			select {
			case <-pctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(values)
	}
}

// pokeRequest makes the controllers look at a request again (as a requeue at a
// moved clock's instant would).
func pokeRequest(name string) {
	GinkgoHelper()
	Eventually(func() error {
		r := request(name)
		if r.Annotations == nil {
			r.Annotations = map[string]string{}
		}
		r.Annotations["test.itmanager.io/poke"] = fmt.Sprint(time.Now().UnixNano())
		return k8s.Update(ctx, r)
	}).Should(Succeed())
}

// decide sets Approved or Denied as c, for the generation it read, as
// `kubectl itm approve` does, again when the controller's status write got
// there first (the plugin fails instead: the test reads what it decides).
func decide(c client.Client, name, condType string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &itmv1.OnboardingRequest{}
		if err := c.Get(ctx, types.NamespacedName{Name: name}, cur); err != nil {
			return err
		}
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: "ByTest", Message: "checked",
			ObservedGeneration: cur.Generation})
		return c.Status().Update(ctx, cur)
	})
}

// whoAmI authenticates with the kubeconfig against the real API server.
func whoAmI(kubeconfig []byte) (string, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

func ldapEntry(dn string) *ldap.Entry {
	GinkgoHelper()
	c, err := ldapServer.Admin()
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
		"(objectClass=*)", []string{"uid", "mail", "title", "description", "pwdAccountLockedTime"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	Expect(err).NotTo(HaveOccurred())
	return res.Entries[0]
}

func groupMembers(group string) []string {
	GinkgoHelper()
	c, err := ldapServer.Admin()
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest("cn="+group+","+ldapServer.GroupsDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
		"(objectClass=*)", []string{"member"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	Expect(err).NotTo(HaveOccurred())
	return res.Entries[0].GetAttributeValues("member")
}

var _ = Describe("OnboardingRequest", func() {
	It("waits for approval, provisions a ServiceAccount whose bound token works, and revokes it on offboarding", func() {
		p := kubeProvider()
		ns := p.Spec.Kubernetes.Namespace
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		approver := impersonate(uniqueName("it@example.com"), writeRequests, approveRequests)
		r := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{p.Name} })
		Eventually(func() error { return requester.Create(ctx, r.DeepCopy()) }).Should(Succeed())

		By("nothing is provisioned before approval")
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		Consistently(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name}, &corev1.ServiceAccount{}))
		}).WithTimeout(time.Second).Should(BeTrue())
		Expect(request(r.Name).Finalizers).To(ContainElement("itmanager.io/offboarding"))

		By("the requester cannot approve; an approver can")
		// The controller's clock moves before the approval so that the
		// renewal instant of the token about to be issued (80% of its hour)
		// falls renewLead after its issuance: the renewal below is the
		// controller's own requeue, with no write to the request.
		const renewLead = 5 * time.Second
		onbClock.setNow(time.Now().Add(48*time.Minute - renewLead))
		DeferCleanup(onbClock.reset)
		joined := max(gauge("itmanager_onboarding_joiners_total", nil), 0)
		Expect(decide(requester, r.Name, itmv1.OnboardingConditionApproved)).To(MatchError(ContainSubstring("may not approve")))
		Expect(decide(approver, r.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
		expiries := tokenExpiries(ns, r.Name+"-kubeconfig")
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
		generation := request(r.Name).Generation
		// Counted right after the status write the test just saw.
		Eventually(func() float64 { return gauge("itmanager_onboarding_joiners_total", nil) }).Should(BeNumerically(">=", joined+1))
		got := request(r.Name)
		Expect(got.Status.Accounts).To(ConsistOf(itmv1.AccountStatus{Provider: p.Name, ID: r.Name, State: itmv1.AccountStateProvisioned}))
		Expect(got.Status.CredentialsSecret).To(Equal(&itmv1.ObjectReference{Namespace: ns, Name: r.Name + "-kubeconfig"}))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Ready")).To(BeTrue())
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, itmv1.OnboardingConditionApproved)).To(BeTrue(), "the approval is kept")

		sa := &corev1.ServiceAccount{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name}, sa)).To(Succeed())
		Expect(sa.Annotations).To(HaveKeyWithValue(accounts.AnnotationOwnerUID, string(got.UID)))
		secret := &corev1.Secret{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name + "-kubeconfig"}, secret)).To(Succeed())
		kubeconfig := secret.Data["kubeconfig"]
		Expect(string(kubeconfig)).NotTo(BeEmpty())

		By("the token authenticates as the ServiceAccount against the API server, and nothing secret is in status")
		Expect(whoAmI(kubeconfig)).To(Equal("system:serviceaccount:" + ns + ":" + r.Name))
		cfg, err := clientcmd.Load(kubeconfig)
		Expect(err).NotTo(HaveOccurred())
		token := cfg.AuthInfos[r.Name].Token
		raw, err := json.Marshal(got)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(token))
		expires, err := time.Parse(time.RFC3339, secret.Annotations[accounts.AnnotationTokenExpires])
		Expect(err).NotTo(HaveOccurred())
		Expect(expires).To(BeTemporally("~", time.Now().Add(time.Hour), time.Minute), "tokenTTL")

		By("the controller requeues itself at the renewal instant and renews the token once 80% of its life has passed")
		Eventually(func() int { return len(expiries()) }).Should(BeNumerically(">=", 2))
		onbClock.reset()
		tokens := expiries()
		first, err := time.Parse(time.RFC3339, tokens[0].state)
		Expect(err).NotTo(HaveOccurred())
		Expect(first).To(BeTemporally("~", time.Now().Add(time.Hour), time.Minute), "the first token, issued at approval")
		Expect(tokens[1].at).To(BeTemporally(">=", first.Add(-time.Hour/5)), "renewed once 80 percent of the token's life had passed, never before")
		Expect(request(r.Name).Generation).To(Equal(generation), "nothing changed the request in between")

		By("offboarding (open to the requester) deletes the Secret and the ServiceAccount; the token stops working")
		left := max(gauge("itmanager_onboarding_leavers_total", nil), 0)
		Eventually(func() error {
			cur := &itmv1.OnboardingRequest{}
			if err := requester.Get(ctx, types.NamespacedName{Name: r.Name}, cur); err != nil {
				return err
			}
			cur.Spec.Offboard = true
			return requester.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		Eventually(func() float64 { return gauge("itmanager_onboarding_leavers_total", nil) }).Should(BeNumerically(">=", left+1))
		got = request(r.Name)
		Expect(got.Status.Accounts).To(ConsistOf(itmv1.AccountStatus{Provider: p.Name, ID: r.Name, State: itmv1.AccountStateDeleted}))
		Expect(got.Status.CredentialsSecret).To(BeNil())
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name + "-kubeconfig"}, &corev1.Secret{}))).To(BeTrue())
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name}, &corev1.ServiceAccount{}))).To(BeTrue())
		Eventually(func() error { _, err := whoAmI(kubeconfig); return err }).WithTimeout(30 * time.Second).
			Should(MatchError(ContainSubstring("Unauthorized")))

		By("the record stays; deleting it finishes at once")
		Expect(k8s.Delete(ctx, got)).To(Succeed())
		Eventually(requestGone(r.Name)).Should(BeTrue())
	})

	It("creates accounts disabled before startDate, enables them at it, and offboards at endDate, each instant reached by the controller's own requeue (fake clock)", func() {
		p := kubeProvider()
		ns := p.Spec.Kubernetes.Namespace
		// The dates are two days away; the controller's clock is moved
		// before the request exists so that startDate is lead away and
		// endDate lead after it. Nothing writes the request in between: each
		// instant is acted on because the controller asked to be woken then.
		const lead = 6 * time.Second
		start := time.Now().Add(48 * time.Hour).Truncate(time.Second)
		end := start.Add(lead)
		name := uniqueName("joiner")

		By("a laptop assigned by hand (no device request, no record) is part of what offboarding undoes")
		laptop := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("lt")}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: name}}
		Expect(k8s.Create(ctx, laptop)).To(Succeed())

		onbClock.setNow(start.Add(-lead))
		DeferCleanup(onbClock.reset)
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Name = name
			r.Spec.AccountProviders = []string{p.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
			r.Spec.StartDate = &metav1.Time{Time: start}
			r.Spec.EndDate = &metav1.Time{Time: end}
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())

		By("Scheduled: the ServiceAccount exists, without credentials")
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseScheduled))
		Expect(accountOf(r.Name, p.Name)()).To(Equal(itmv1.AccountStatus{Provider: p.Name, ID: r.Name, State: itmv1.AccountStateDisabled,
			Message: "created disabled until spec.startDate"}))
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name}, &corev1.ServiceAccount{})).To(Succeed())
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name + "-kubeconfig"}, &corev1.Secret{}))).To(BeTrue())
		Expect(request(r.Name).Status.CredentialsSecret).To(BeNil())
		generation := request(r.Name).Generation

		By("at startDate, by the controller's own requeue: Active, with credentials")
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
		Expect(onbClock.Now()).To(BeTemporally(">=", start))
		Expect(accountOf(r.Name, p.Name)().State).To(Equal(itmv1.AccountStateProvisioned))
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name + "-kubeconfig"}, &corev1.Secret{})).To(Succeed())

		By("at endDate, by the controller's own requeue: offboarding stops at the laptop, whose assignee another field manager set, and says so")
		Eventually(func() string {
			c := meta.FindStatusCondition(request(r.Name).Status.Conditions, itmv1.OnboardingConditionDevicesAssigned)
			if c == nil {
				return ""
			}
			return c.Reason + ": " + c.Message
		}).Should(Equal("ReleaseBlocked: Device " + laptop.Name + ": spec.assignee is set by another field manager (GitOps, kubectl apply); remove it there"))
		Expect(onbClock.Now()).To(BeTemporally(">=", end))
		Expect(phaseOf(r.Name)()).To(Equal(itmv1.OnboardingPhaseOffboarding))
		Expect(request(r.Name).Generation).To(Equal(generation), "nothing changed the request in between")
		updateDevice(laptop.Name, func(d *itmv1.Device) { d.Spec.Assignee = "" })
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: r.Name}, &corev1.ServiceAccount{}))).To(BeTrue())

		By("offboarding is final: moving endDate later does not bring the person back")
		Eventually(func() error {
			cur := request(r.Name)
			cur.Spec.EndDate = &metav1.Time{Time: start.Add(72 * time.Hour)}
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Consistently(phaseOf(r.Name)).WithTimeout(2 * time.Second).Should(Equal(itmv1.OnboardingPhaseOffboarded))
	})

	It("refuses a Kubernetes provider in a namespace another provider uses, or in the operator's", func() {
		first := kubeProvider()
		second := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: first.Spec.Kubernetes.Namespace}}}
		Expect(k8s.Create(ctx, second)).To(Succeed())
		Eventually(providerReady(second.Name)).Should(Equal(metav1.ConditionFalse))
		got := &itmv1.AccountProvider{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: second.Name}, got)).To(Succeed())
		Expect(got.Status.Message).To(Equal(fmt.Sprintf("spec.kubernetes.namespace %q is already used by AccountProvider %s; each Kubernetes provider needs its own namespace",
			first.Spec.Kubernetes.Namespace, first.Name)))
		Expect(meta.FindStatusCondition(got.Status.Conditions, "Ready").Reason).To(Equal("InvalidConfiguration"))
		Expect(providerReady(first.Name)()).To(Equal(metav1.ConditionTrue), "the older one keeps working")

		operator := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: testenv.OperatorNamespace}}}
		Expect(k8s.Create(ctx, operator)).To(Succeed())
		Eventually(providerReady(operator.Name)).Should(Equal(metav1.ConditionFalse))

		By("a request for it fails with the reason and creates nothing")
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{operator.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseFailed))
		// The next pass (its own status write starts one) sees the
		// recorded failure, not a made account: the request stays Failed.
		Consistently(phaseOf(r.Name)).WithTimeout(2 * time.Second).Should(Equal(itmv1.OnboardingPhaseFailed))
		Expect(accountOf(r.Name, operator.Name)().Message).To(ContainSubstring("it is the operator's own"))
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: r.Name}, &corev1.ServiceAccount{}))).To(BeTrue())
	})

	It("refuses a status forged by an approver: the request stays AwaitingApproval and no account is made", func() {
		p := kubeProvider()
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		approverName := uniqueName("it@example.com")
		approver := impersonate(approverName, writeRequests, approveRequests)
		r := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{p.Name} })
		Eventually(func() error { return requester.Create(ctx, r.DeepCopy()) }).Should(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))

		Expect(updateStatusAs(approver, r.Name, func(o *itmv1.OnboardingRequest) {
			o.Status.Phase = itmv1.OnboardingPhaseActive
			o.Status.Accounts = []itmv1.AccountStatus{{Provider: p.Name, ID: "someone-else", State: itmv1.AccountStateProvisioned}}
		})).To(MatchError(ContainSubstring(`status.phase: user "` + approverName + `" may not write it`)))
		Consistently(func() itmv1.OnboardingRequestStatus { return request(r.Name).Status }).WithTimeout(2 * time.Second).Should(And(
			HaveField("Phase", itmv1.OnboardingPhaseAwaitingApproval), HaveField("Accounts", BeEmpty())))
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: p.Spec.Kubernetes.Namespace, Name: r.Name}, &corev1.ServiceAccount{}))).To(BeTrue())
	})

	It("puts back an offboarding finalizer that went missing on a live request", func() {
		r := joiner(nil)
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(func() []string { return request(r.Name).Finalizers }).Should(ContainElement("itmanager.io/offboarding"))
		// Only the manager's identity may remove it (admission); a policy
		// not loaded yet, or a bug, must still not leave it off.
		// The manager holds patch, not update, on requests.
		Eventually(func() error {
			cur := request(r.Name)
			base := cur.DeepCopy()
			controllerutil.RemoveFinalizer(cur, "itmanager.io/offboarding")
			return asManager().Patch(ctx, cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		}).Should(Succeed())
		Eventually(func() []string { return request(r.Name).Finalizers }).Should(ContainElement("itmanager.io/offboarding"))
	})

	It("fixes a request's implicit defaults at approval: a provider made default later reaches only requests approved after it", func() {
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		approver := impersonate(uniqueName("it@example.com"), writeRequests, approveRequests)
		approved := func() *itmv1.OnboardingRequest {
			GinkgoHelper()
			r := joiner(nil)
			Eventually(func() error { return requester.Create(ctx, r.DeepCopy()) }).Should(Succeed())
			Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
			Expect(request(r.Name).Status.DefaultProviders).To(BeNil(), "nothing is fixed before approval")
			Expect(decide(approver, r.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
			Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
			return request(r.Name)
		}
		before := approved()
		Expect(before.Status.DefaultProviders).NotTo(BeNil())

		By("a Kubernetes provider is made default after that approval")
		p := &itmv1.AccountProvider{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("team")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Default: true,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: uniqueName("team-users"), TokenTTL: &metav1.Duration{Duration: time.Hour}}},
		}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		// Other specs' requests name no provider either: it stops being
		// default when this one ends.
		DeferCleanup(func() {
			Expect(updateAs(k8s, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Default = false })).To(Succeed())
		})
		Eventually(providerReady(p.Name)).Should(Equal(metav1.ConditionTrue))

		By("the person approved before gets no account there, however often the request is looked at")
		pokeRequest(before.Name)
		noAccount := func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: p.Spec.Kubernetes.Namespace, Name: before.Name}, &corev1.ServiceAccount{}))
		}
		Consistently(noAccount).WithTimeout(3 * time.Second).Should(BeTrue())
		got := request(before.Name)
		Expect(got.Status.DefaultProviders.Names).NotTo(ContainElement(p.Name))
		Expect(got.Status.DefaultProviders).To(Equal(before.Status.DefaultProviders), "fixed once, never rewritten")
		Expect(got.Status.Accounts).NotTo(ContainElement(HaveField("Provider", p.Name)))
		Expect(got.Status.Phase).To(Equal(itmv1.OnboardingPhaseActive))

		By("a request approved afterwards gets the new default, recorded in its status")
		after := approved()
		Expect(after.Status.DefaultProviders.Names).To(ContainElement(p.Name))
		Expect(after.Status.Accounts).To(ContainElement(itmv1.AccountStatus{Provider: p.Name, ID: after.Name, State: itmv1.AccountStateProvisioned}))
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: p.Spec.Kubernetes.Namespace, Name: after.Name}, &corev1.ServiceAccount{})).To(Succeed())

		By("the provider stops being default: the request approved with it keeps its account; offboarding finds it by the record")
		Expect(updateAs(k8s, p.Name, func(o *itmv1.AccountProvider) { o.Spec.Default = false })).To(Succeed())
		pokeRequest(after.Name)
		Consistently(func() []itmv1.AccountStatus { return request(after.Name).Status.Accounts }).WithTimeout(2 * time.Second).
			Should(ContainElement(itmv1.AccountStatus{Provider: p.Name, ID: after.Name, State: itmv1.AccountStateProvisioned}))
		Expect(updateAs(k8s, after.Name, func(o *itmv1.OnboardingRequest) { o.Spec.Offboard = true })).To(Succeed())
		Eventually(phaseOf(after.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		Expect(apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: p.Spec.Kubernetes.Namespace, Name: after.Name}, &corev1.ServiceAccount{}))).To(BeTrue())
	})

	It("provisions nothing for a denied request", func() {
		p := kubeProvider()
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		approver := impersonate(uniqueName("it@example.com"), writeRequests, approveRequests)
		r := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{p.Name} })
		Eventually(func() error { return requester.Create(ctx, r.DeepCopy()) }).Should(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		Expect(decide(approver, r.Name, itmv1.OnboardingConditionDenied)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseFailed))
		got := request(r.Name)
		Expect(meta.FindStatusCondition(got.Status.Conditions, "Ready").Reason).To(Equal("Denied"))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Stalled")).To(BeTrue())
		Expect(got.Status.Accounts).To(BeEmpty())
		Consistently(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Namespace: p.Spec.Kubernetes.Namespace, Name: r.Name}, &corev1.ServiceAccount{}))
		}).WithTimeout(2 * time.Second).Should(BeTrue())
	})

	It("keeps an LDAP entry and its groups in line, never adopts a foreign entry, and locks the entry when the request is deleted", func() {
		p := ldapProvider(nil)
		Eventually(providerReady(p.Name)).Should(Equal(metav1.ConditionTrue))
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{p.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
			r.Spec.Groups = []string{uniqueName("eng"), uniqueName("oncall")}
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())
		dn := "uid=" + r.Name + "," + ldapServer.PeopleDN
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))
		Expect(accountOf(r.Name, p.Name)()).To(Equal(itmv1.AccountStatus{Provider: p.Name, ID: dn, State: itmv1.AccountStateProvisioned}))
		e := ldapEntry(dn)
		Expect(e.GetAttributeValue("mail")).To(Equal("grace@example.com"))
		Expect(e.GetAttributeValue("pwdAccountLockedTime")).To(BeEmpty())
		Expect(e.GetAttributeValue("description")).To(Equal(accounts.OwnerMarkPrefix + string(request(r.Name).UID)))
		Expect(groupMembers(r.Spec.Groups[0])).To(ConsistOf(dn))
		Expect(groupMembers(r.Spec.Groups[1])).To(ConsistOf(dn))

		By("a group and the title change: the directory follows")
		Eventually(func() error {
			cur := request(r.Name)
			cur.Spec.Groups = cur.Spec.Groups[:1]
			cur.Spec.Person.Title = "Staff Engineer"
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(func() []string { return groupMembers(r.Spec.Groups[1]) }).Should(BeEmpty())
		Eventually(func() string { return ldapEntry(dn).GetAttributeValue("title") }).Should(Equal("Staff Engineer"))

		By("a group someone else created in the directory is not joined, and the request says so")
		foreignGroup := uniqueName("finance")
		admin, err := ldapServer.Admin()
		Expect(err).NotTo(HaveOccurred())
		g := ldap.NewAddRequest("cn="+foreignGroup+","+ldapServer.GroupsDN, nil)
		g.Attribute("objectClass", []string{"groupOfNames"})
		g.Attribute("cn", []string{foreignGroup})
		g.Attribute("member", []string{ldapServer.AdminDN})
		Expect(admin.Add(g)).To(Succeed())
		_ = admin.Close()
		Eventually(func() error {
			cur := request(r.Name)
			cur.Spec.Groups = append(cur.Spec.Groups, foreignGroup)
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(func() string { return accountOf(r.Name, p.Name)().Message }).Should(ContainSubstring("was not created by itmanager; membership is not added"))
		got := request(r.Name)
		Expect(accountOf(r.Name, p.Name)().State).To(Equal(itmv1.AccountStateProvisioned), "the account itself is in place")
		Expect(got.Status.Phase).To(Equal(itmv1.OnboardingPhaseActive))
		Expect(meta.IsStatusConditionTrue(got.Status.Conditions, "Stalled")).To(BeTrue())
		Expect(groupMembers(foreignGroup)).To(ConsistOf(ldapServer.AdminDN), "untouched")
		Eventually(func() error {
			cur := request(r.Name)
			cur.Spec.Groups = cur.Spec.Groups[:1]
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(func() bool { return meta.IsStatusConditionTrue(request(r.Name).Status.Conditions, "Ready") }).Should(BeTrue())

		By("a foreign entry of another person's name is reported, never adopted")
		c, err := ldapServer.Admin()
		Expect(err).NotTo(HaveOccurred())
		foreign := uniqueName("mallory")
		add := ldap.NewAddRequest("uid="+foreign+","+ldapServer.PeopleDN, nil)
		add.Attribute("objectClass", []string{"inetOrgPerson"})
		add.Attribute("uid", []string{foreign})
		add.Attribute("cn", []string{"Mallory"})
		add.Attribute("sn", []string{"Mallory"})
		Expect(c.Add(add)).To(Succeed())
		_ = c.Close()
		m := joiner(func(m *itmv1.OnboardingRequest) {
			m.Name = foreign
			m.Spec.AccountProviders = []string{p.Name}
			m.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, m)).To(Succeed())
		Eventually(phaseOf(foreign)).Should(Equal(itmv1.OnboardingPhaseFailed))
		Expect(accountOf(foreign, p.Name)().State).To(Equal(itmv1.AccountStateFailed))
		Expect(accountOf(foreign, p.Name)().Message).To(ContainSubstring("was not created by itmanager"))
		Expect(ldapEntry("uid="+foreign+","+ldapServer.PeopleDN).GetAttributeValue("description")).To(BeEmpty(), "untouched")
		By("deleting the conflicting request leaves the foreign entry alone")
		Expect(k8s.Delete(ctx, m)).To(Succeed())
		Eventually(requestGone(foreign)).Should(BeTrue())
		Expect(ldapEntry("uid=" + foreign + "," + ldapServer.PeopleDN)).NotTo(BeNil())

		By("deleting the request offboards first (Disable: locked, out of every group), then lets go")
		Expect(k8s.Delete(ctx, request(r.Name))).To(Succeed())
		Eventually(requestGone(r.Name)).Should(BeTrue())
		e = ldapEntry(dn)
		Expect(e.GetAttributeValue("pwdAccountLockedTime")).NotTo(BeEmpty())
		Expect(groupMembers(r.Spec.Groups[0])).To(BeEmpty())
	})

	It("blocks offboarding while a provider is unreachable and finishes with force-offboard, recording what was skipped", func() {
		p := ldapProvider(func(s *itmv1.LDAPProviderSpec) { s.OffboardAction = itmv1.LDAPOffboardDelete })
		Eventually(providerReady(p.Name)).Should(Equal(metav1.ConditionTrue))
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{p.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseActive))

		By("the directory becomes unreachable")
		Eventually(func() error {
			cur := &itmv1.AccountProvider{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: p.Name}, cur)).To(Succeed())
			cur.Spec.LDAP.URL = fmt.Sprintf("ldap://127.0.0.1:%d", freePort())
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(providerReady(p.Name)).Should(Equal(metav1.ConditionFalse))

		By("an Active person keeps their access while the provider is down; Ready says what is wrong")
		pokeRequest(r.Name)
		Eventually(func() string {
			c := meta.FindStatusCondition(request(r.Name).Status.Conditions, "Ready")
			return c.Reason + ": " + c.Message
		}).Should(And(HavePrefix("Degraded: AccountProvider "+p.Name), ContainSubstring("connect to ldap://127.0.0.1")))
		Expect(request(r.Name).Status.Phase).To(Equal(itmv1.OnboardingPhaseActive))
		Expect(accountOf(r.Name, p.Name)().State).To(Equal(itmv1.AccountStateProvisioned))

		Eventually(func() error {
			cur := request(r.Name)
			cur.Spec.Offboard = true
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarding))
		Eventually(func() string {
			c := meta.FindStatusCondition(request(r.Name).Status.Conditions, itmv1.OnboardingConditionAccountsReady)
			if c == nil {
				return ""
			}
			return c.Reason + ": " + c.Message
		}).Should(And(HavePrefix("OffboardingBlocked"), ContainSubstring(p.Name)))
		Expect(accountOf(r.Name, p.Name)().State).To(Equal(itmv1.AccountStateProvisioned), "the record of what must be undone is kept")
		Eventually(func() float64 {
			return gauge("itmanager_onboarding_provisioning_errors_total", map[string]string{"provider": p.Name})
		}).Should(BeNumerically(">", 0))

		By("only an approver may force; then offboarding finishes and says what it skipped")
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		cur := &itmv1.OnboardingRequest{}
		Expect(requester.Get(ctx, types.NamespacedName{Name: r.Name}, cur)).To(Succeed())
		cur.Annotations[itmv1.AnnotationForceOffboard] = "directory decommissioned"
		Expect(requester.Update(ctx, cur)).To(MatchError(ContainSubstring("itmanager.io/force-offboard")))
		Eventually(func() error {
			cur := request(r.Name)
			cur.Annotations[itmv1.AnnotationForceOffboard] = "directory decommissioned"
			return k8s.Update(ctx, cur)
		}).Should(Succeed())
		Eventually(phaseOf(r.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		a := accountOf(r.Name, p.Name)()
		Expect(a.State).To(Equal(itmv1.AccountStateFailed))
		Expect(a.Message).To(HavePrefix("not undone, skipped by itmanager.io/force-offboard"))
		Expect(meta.FindStatusCondition(request(r.Name).Status.Conditions, itmv1.OnboardingConditionAccountsReady).Reason).To(Equal("ForceOffboarded"))
		Expect(ldapEntry("uid="+r.Name+","+ldapServer.PeopleDN)).NotTo(BeNil(), "what was skipped is still there, as recorded")
	})

	It("never assigns one device twice to requests racing for it, and retries when inventory changes", func() {
		class := itmv1.DeviceClassTablet
		label := map[string]string{"pool": uniqueName("pool")}
		newDevices := func(n int) {
			for range n {
				Expect(k8s.Create(ctx, &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("tab"), Labels: label},
					Spec: itmv1.DeviceSpec{Class: class}})).To(Succeed())
			}
		}
		newDevices(6)

		// Ten requests at once: the controller's workers race each other on
		// a cache that lags their own assignments.
		var reqs []*itmv1.OnboardingRequest
		for range 10 {
			reqs = append(reqs, joiner(func(r *itmv1.OnboardingRequest) {
				r.Spec.ApprovalRequired = ptr.To(false)
				r.Spec.Devices = []itmv1.DeviceRequest{{Class: class, Selector: &metav1.LabelSelector{MatchLabels: label}}}
			}))
		}
		var names []string
		var wg sync.WaitGroup
		for _, r := range reqs {
			names = append(names, r.Name)
			wg.Go(func() {
				defer GinkgoRecover()
				Expect(k8s.Create(ctx, r)).To(Succeed())
			})
		}
		wg.Wait()

		// consistent checks that every device a request records is assigned
		// to that person, that no person holds more devices than recorded,
		// and returns how many requests are satisfied. Requests are read
		// before devices: an assignment always precedes its record.
		consistent := func() int {
			recorded := map[string][]string{}
			for _, n := range names {
				recorded[n] = request(n).Status.Devices
			}
			var devices itmv1.DeviceList
			Expect(k8s.List(ctx, &devices, client.MatchingLabels(label))).To(Succeed())
			holder, held := map[string]string{}, map[string]int{}
			for _, d := range devices.Items {
				holder[d.Name] = d.Spec.Assignee
				held[d.Spec.Assignee]++
			}
			satisfied := 0
			for _, n := range names {
				for _, d := range recorded[n] {
					Expect(holder[d]).To(Equal(n), "device %s recorded by %s but assigned to %q", d, n, holder[d])
				}
				Expect(held[n]).To(BeNumerically("<=", 1), "%s holds %d devices", n, held[n])
				if len(recorded[n]) == 1 {
					satisfied++
				}
			}
			return satisfied
		}
		Eventually(consistent).WithTimeout(30 * time.Second).Should(Equal(6))
		Consistently(consistent).WithTimeout(2 * time.Second).Should(Equal(6))
		// The other four say which entry is unmet.
		Eventually(func() int {
			waiting := 0
			for _, n := range names {
				r := request(n)
				c := meta.FindStatusCondition(r.Status.Conditions, itmv1.OnboardingConditionDevicesAssigned)
				if r.Status.Phase == itmv1.OnboardingPhaseProvisioning && c != nil && c.Status == metav1.ConditionFalse &&
					c.Message == "spec.devices[0]: no Active, unassigned Tablet Device matches the selector" {
					waiting++
				}
			}
			return waiting
		}).Should(Equal(4))

		By("new inventory satisfies the waiting requests")
		newDevices(4)
		Eventually(consistent).WithTimeout(30 * time.Second).Should(Equal(10))
		for _, n := range names {
			Eventually(phaseOf(n)).Should(Equal(itmv1.OnboardingPhaseActive))
		}

		By("offboarding unassigns")
		leaver := request(names[0])
		device := leaver.Status.Devices[0]
		leaver.Spec.Offboard = true
		Expect(k8s.Update(ctx, leaver)).To(Succeed())
		Eventually(phaseOf(leaver.Name)).Should(Equal(itmv1.OnboardingPhaseOffboarded))
		Expect(getDevice(device).Spec.Assignee).To(BeEmpty())
		Expect(request(leaver.Name).Status.Devices).To(BeEmpty())
	})

	It("resumes after the manager stops mid-provisioning: nothing duplicated, nothing lost", func() {
		kube := kubeProvider()
		ld := ldapProvider(nil)
		Eventually(providerReady(ld.Name)).Should(Equal(metav1.ConditionTrue))

		By("a manager that dies right after its first account is created, before recording anything")
		stopOnboarding()
		var crashed atomic.Bool
		r := joiner(func(r *itmv1.OnboardingRequest) {
			r.Spec.AccountProviders = []string{kube.Name, ld.Name}
			r.Spec.ApprovalRequired = ptr.To(false)
		})
		crashing := startOnboarding(func(inner controllers.ProviderOpener, die context.CancelFunc) controllers.ProviderOpener {
			return &crashAfterEnsure{inner: inner, die: die, crashed: &crashed, user: r.Name}
		})
		Expect(k8s.Create(ctx, r)).To(Succeed())
		Eventually(crashed.Load).WithTimeout(30 * time.Second).Should(BeTrue())
		crashing()
		Expect(request(r.Name).Status.Accounts).To(BeEmpty(), "the crash came before any record")
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: kube.Spec.Kubernetes.Namespace, Name: r.Name}, &corev1.ServiceAccount{})).To(Succeed(),
			"the account was created")

		By("a new manager finds its own account by the ownership mark and finishes")
		stopOnboarding = startOnboarding(nil)
		Eventually(phaseOf(r.Name)).WithTimeout(30 * time.Second).Should(Equal(itmv1.OnboardingPhaseActive))
		got := request(r.Name)
		Expect(got.Status.Accounts).To(ConsistOf(
			itmv1.AccountStatus{Provider: kube.Name, ID: r.Name, State: itmv1.AccountStateProvisioned},
			itmv1.AccountStatus{Provider: ld.Name, ID: "uid=" + r.Name + "," + ldapServer.PeopleDN, State: itmv1.AccountStateProvisioned},
		))
		var sas corev1.ServiceAccountList
		Expect(k8s.List(ctx, &sas, client.InNamespace(kube.Spec.Kubernetes.Namespace), client.MatchingLabels{accounts.LabelUser: r.Name})).To(Succeed())
		Expect(sas.Items).To(HaveLen(1))
		var secrets corev1.SecretList
		Expect(k8s.List(ctx, &secrets, client.InNamespace(kube.Spec.Kubernetes.Namespace), client.MatchingLabels{accounts.LabelUser: r.Name})).To(Succeed())
		Expect(secrets.Items).To(HaveLen(1))
	})
})

// crashAfterEnsure stands for a manager killed right after its first
// account is created: it stops the manager and never returns success.
type crashAfterEnsure struct {
	inner   controllers.ProviderOpener
	die     context.CancelFunc
	crashed *atomic.Bool
	user    string
}

func (c *crashAfterEnsure) Open(ctx context.Context, p *itmv1.AccountProvider) (accounts.Provider, error) {
	prov, err := c.inner.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return &crashingProvider{Provider: prov, c: c}, nil
}

type crashingProvider struct {
	accounts.Provider
	c *crashAfterEnsure
}

func (p *crashingProvider) Ensure(ctx context.Context, a accounts.Account) (accounts.Result, error) {
	res, err := p.Provider.Ensure(ctx, a)
	if err != nil || a.User != p.c.user || p.c.crashed.Swap(true) {
		return res, err
	}
	p.c.die()
	<-ctx.Done()
	return accounts.Result{}, ctx.Err()
}
