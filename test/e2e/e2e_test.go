//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// The specs share one cluster and one installation, and the last ones
// uninstall and reinstall it: they run in this order, each after the
// previous one whatever its outcome.
var _ = Describe("itmanager on a real cluster", Ordered, ContinueOnFailure, func() {
	installSpecs()
	onboardingSpecs()
	enforcementSpecs()
	nodeUpgradeSpecs()
	leaderLossSpecs()
	helmSpecs()
})

func installSpecs() {
	Describe("Install", func() {
		It("runs the manager Deployment with 2 replicas and the check-in Deployment, both Available, and exactly one manager Pod holds the leader Lease", func() {
			waitAvailable(managerDeployment(), 2)
			waitAvailable(checkinDeployment(), 0)
			pod := leaderPod()
			Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
			AddReportEntry("leader", pod.Name)
		})

		It("answers through the webhook Service: a user's MaintenanceWindow with an unknown time zone is refused with the webhook's message naming the field, a valid one is admitted", func() {
			user := uniqueName("mw-author")
			author := impersonate(user, rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"maintenancewindows"}, Verbs: []string{"create", "get", "delete"}})
			mw := func(tz string) *itmv1.MaintenanceWindow {
				return &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("tz")}, Spec: itmv1.MaintenanceWindowSpec{
					Selector: metav1.LabelSelector{MatchLabels: map[string]string{"e2e": "nothing"}}, TimeZone: tz,
					Windows: []itmv1.Window{{Schedule: "0 2 * * 6", Duration: metav1.Duration{Duration: time.Hour}}},
				}}
			}
			err := author.Create(ctx, mw("Mars/Olympus_Mons"))
			Expect(err).To(MatchError(And(ContainSubstring("admission webhook"), ContainSubstring("spec.timeZone"), ContainSubstring("Mars/Olympus_Mons"))))
			good := mw("Europe/Zurich")
			Expect(author.Create(ctx, good)).To(Succeed())
			Expect(author.Delete(ctx, good)).To(Succeed())
		})

		It("enforces the admission policies in the API server: an impersonated user's AccessPolicy into a namespace where they may not write NetworkPolicies is refused with the policy's message, and their OnboardingRequest carries their name as requester whatever they wrote", func() {
			ns := newNamespace("e2e-shop")
			user := uniqueName("author")
			author := impersonate(user,
				rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: []string{"accesspolicies", "onboardingrequests"}, Verbs: []string{"create", "get", "delete"}})
			policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("shop")}, Spec: itmv1.AccessPolicySpec{
				Subjects:     itmv1.Subjects{Users: []string{"nobody"}},
				Destinations: []itmv1.Destination{{Namespaces: []string{ns}}},
			}}
			Expect(author.Create(ctx, policy)).To(MatchError(ContainSubstring(fmt.Sprintf(
				`spec.destinations[0].namespaces[0]: user %q may not write NetworkPolicies in namespace %q`, user, ns))))

			By("the positive control: with the NetworkPolicy rights in the namespace the same policy is admitted")
			grantIn(ns, user, rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"create", "update"}})
			Expect(author.Create(ctx, policy)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(policy) })

			By("the MutatingAdmissionPolicy stamping the requester")
			req := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("stamped"),
				Annotations: map[string]string{itmv1.AnnotationRequestedBy: "someone-else"}},
				Spec: itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: "Stamped", Email: "stamped@example.com"}}}
			Expect(author.Create(ctx, req)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(req) })
			got := &itmv1.OnboardingRequest{}
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(req), got)).To(Succeed())
			Expect(got.Annotations).To(HaveKeyWithValue(itmv1.AnnotationRequestedBy, user))
		})
	})
}

func managerDeployment() types.NamespacedName {
	return types.NamespacedName{Namespace: operatorNS, Name: releaseName}
}

func checkinDeployment() types.NamespacedName {
	return types.NamespacedName{Namespace: operatorNS, Name: releaseName + "-checkin"}
}

// waitAvailable waits until the Deployment has rolled out its current
// generation and is Available, with replicas replicas (0: any).
func waitAvailable(key types.NamespacedName, replicas int32) *appsv1.Deployment {
	GinkgoHelper()
	d := &appsv1.Deployment{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, key, d)).To(Succeed())
		if replicas > 0 {
			g.Expect(d.Spec.Replicas).To(HaveValue(Equal(replicas)))
		}
		g.Expect(d.Status.ObservedGeneration).To(Equal(d.Generation))
		want := *d.Spec.Replicas
		g.Expect(d.Status.UpdatedReplicas).To(Equal(want), "updated")
		g.Expect(d.Status.ReadyReplicas).To(Equal(want), "ready")
		g.Expect(d.Status.AvailableReplicas).To(Equal(want), "available")
		g.Expect(d.Status.Replicas).To(Equal(want), "no old Pods left")
		c := deploymentCondition(d, appsv1.DeploymentAvailable)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(corev1.ConditionTrue))
	}).WithTimeout(5*time.Minute).Should(Succeed(), "Deployment %s Available", key)
	return d
}

func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func leaderLease() *coordinationv1.Lease {
	l := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: operatorNS, Name: leaseName}, l); err != nil {
		return nil
	}
	return l
}

func holder(l *coordinationv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// managerPods are the manager Deployment's Pods (not the check-in
// service's, which carry their own app.kubernetes.io/name).
func managerPods() []corev1.Pod {
	GinkgoHelper()
	pods := &corev1.PodList{}
	Expect(k8s.List(ctx, pods, client.InNamespace(operatorNS),
		client.MatchingLabels{"app.kubernetes.io/name": "itmanager", "app.kubernetes.io/instance": releaseName})).To(Succeed())
	return pods.Items
}

// leaderPod waits until a running, ready manager Pod holds the leader
// Lease (identity "<pod name>_<uuid>") and returns it.
func leaderPod() *corev1.Pod {
	GinkgoHelper()
	var out *corev1.Pod
	Eventually(func(g Gomega) {
		l := leaderLease()
		g.Expect(l).NotTo(BeNil(), "the Lease %s/%s", operatorNS, leaseName)
		name, _, _ := strings.Cut(holder(l), "_")
		g.Expect(name).NotTo(BeEmpty(), "a holder")
		g.Expect(l.Spec.RenewTime).NotTo(BeNil())
		d := time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		g.Expect(time.Since(l.Spec.RenewTime.Time)).To(BeNumerically("<", d), "the holder renews the Lease")
		var holders []string
		for _, p := range managerPods() {
			if p.Name == name && p.DeletionTimestamp == nil {
				holders = append(holders, p.Name)
				out = p.DeepCopy()
			}
		}
		g.Expect(holders).To(HaveLen(1), "the holder %s is one of the manager Pods", name)
	}).WithTimeout(3 * time.Minute).Should(Succeed())
	return out
}

// impersonate grants user rules through a ClusterRole and binding (both
// removed when the spec ends), waits until the authorizer grants them and
// returns a client acting as user.
func impersonate(user string, rules ...rbacv1.PolicyRule) client.Client {
	GinkgoHelper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("e2e-role")}, Rules: rules}
	Expect(k8s.Create(ctx, role)).To(Succeed())
	DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, role))).To(Succeed()) })
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	Expect(k8s.Create(ctx, binding)).To(Succeed())
	DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, binding))).To(Succeed()) })
	for _, r := range rules {
		waitAllowed(user, "", r)
	}
	cfg := rest.CopyConfig(config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// grantIn gives user rules in namespace through a Role and RoleBinding.
func grantIn(namespace, user string, rules ...rbacv1.PolicyRule) {
	GinkgoHelper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: uniqueName("e2e-role")}, Rules: rules}
	Expect(k8s.Create(ctx, role)).To(Succeed())
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})).To(Succeed())
	for _, r := range rules {
		waitAllowed(user, namespace, r)
	}
}

// waitAllowed waits until the API server's authorizer grants user the
// first verb on the first resource of rule (RBAC learns of bindings from a
// watch).
func waitAllowed(user, namespace string, rule rbacv1.PolicyRule) {
	GinkgoHelper()
	if len(rule.Verbs) == 0 || len(rule.Resources) == 0 {
		return
	}
	attrs := &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: rule.Verbs[0], Resource: rule.Resources[0]}
	if len(rule.APIGroups) > 0 {
		attrs.Group = rule.APIGroups[0]
	}
	if r, sub, ok := strings.Cut(attrs.Resource, "/"); ok {
		attrs.Resource, attrs.Subresource = r, sub
	}
	Eventually(func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: attrs}}
		if err := k8s.Create(ctx, sar); err != nil {
			return false
		}
		return sar.Status.Allowed
	}).WithTimeout(30*time.Second).Should(BeTrue(), "RBAC grants %s %v", user, attrs)
}

// newNamespace makes a namespace deleted (and waited for) when the spec
// ends.
func newNamespace(prefix string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName(prefix)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func() { deleteAndWait(ns) })
	return ns.Name
}

func conditionTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}
