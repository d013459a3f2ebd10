package controllers_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/config/argocd"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// updateFixturesEnv, set to 1, makes the GitOps spec write the live objects
// it drives into each state as the Argo CD health fixtures
// (config/argocd/itmanager.io/<Kind>/testdata/<state>.yaml). Without it the
// spec checks that the committed fixture of every state exists and that its
// health.lua verdict is the live object's.
const updateFixturesEnv = "ITM_UPDATE_ARGOCD_FIXTURES"

// liveObject reads kind/name as a GitOps tool does: unstructured, straight
// from the API server.
func liveObject(kind, name string) *unstructured.Unstructured {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(itmv1.GroupVersion.WithKind(kind))
	Expect(k8s.Get(ctx, types.NamespacedName{Name: name}, u)).To(Succeed())
	return u
}

// kstatusOf is the verdict of the real kstatus library on kind/name.
func kstatusOf(kind, name string) func() string {
	return func() string {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(itmv1.GroupVersion.WithKind(kind))
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, u); err != nil {
			return err.Error()
		}
		res, err := status.Compute(u)
		if err != nil {
			return err.Error()
		}
		return res.Status.String() + ": " + res.Message
	}
}

// createRaw creates obj (its status dropped) and returns the API server's
// answer untouched by any Go type: what a GitOps tool sees right after it
// applied the object, before any controller looked at it.
func createRaw(kind string, obj client.Object) *unstructured.Unstructured {
	GinkgoHelper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	delete(m, "status")
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(itmv1.GroupVersion.WithKind(kind))
	Expect(k8s.Create(ctx, u)).To(Succeed())
	return u
}

// fixture is where the health fixture of kind in state lives.
func fixture(kind, state string) string {
	return filepath.Join("..", "config", "argocd", argocd.Group, kind, "testdata", state+".yaml")
}

// checkArgo runs kind's health.lua on the live object u, expects want, and
// writes or checks the committed fixture of state.
func checkArgo(kind, state string, u *unstructured.Unstructured, want string) {
	GinkgoHelper()
	got, err := argocd.RunKind(kind, u.Object)
	Expect(err).NotTo(HaveOccurred())
	Expect(got.Status).To(Equal(want), "health.lua on the live %s in state %s: %s", kind, state, got.Message)
	path := fixture(kind, state)
	if os.Getenv(updateFixturesEnv) == "1" {
		clean := u.DeepCopy()
		clean.SetManagedFields(nil)
		clean.SetUID("")
		clean.SetResourceVersion("")
		clean.SetCreationTimestamp(metav1.Time{})
		delete(clean.Object["metadata"].(map[string]any), "creationTimestamp")
		b, err := yaml.Marshal(clean.Object)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(path, b, 0o644)).To(Succeed())
		return
	}
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred(), "the fixture of %s in state %s is missing: run this spec with %s=1", kind, state, updateFixturesEnv)
	var obj map[string]any
	Expect(yaml.Unmarshal(b, &obj)).To(Succeed())
	fromFixture, err := argocd.RunKind(kind, obj)
	Expect(err).NotTo(HaveOccurred())
	Expect(fromFixture.Status).To(Equal(got.Status), "the committed fixture %s is out of step with the live object: run this spec with %s=1", path, updateFixturesEnv)
}

// kubectlWait runs the real `kubectl wait --for=condition=Ready` as the
// admin, as a pipeline gating on an object would.
func kubectlWait(kubeconfig, resource, timeout string) (string, error) {
	GinkgoHelper()
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	_, err := os.Stat(kubectl)
	Expect(err).NotTo(HaveOccurred(), "kubectl is expected beside the control plane in KUBEBUILDER_ASSETS (hack/control-plane.sh builds it: make control-plane)")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "wait", "--for=condition=Ready", resource, "--timeout="+timeout)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

var _ = Describe("GitOps health", func() {
	// state is one state a kind is driven into: the kstatus verdict a user
	// expects (Current, InProgress, Failed) and the Argo CD health.
	type state struct {
		kind, name, state string
		kstatus, argo     string
	}

	It("computes kstatus (cli-utils) and Argo CD health (health.lua) of every kind in each of its states as a user expects, and kubectl wait --for=condition=Ready passes only for Ready objects", func() {
		var states []state
		add := func(kind, name, st, ks, argo string) {
			GinkgoHelper()
			Eventually(kstatusOf(kind, name)).WithTimeout(20*time.Second).Should(HavePrefix(ks+":"), "%s %s in state %s", kind, name, st)
			states = append(states, state{kind, name, st, ks, argo})
		}
		// Not reconciled yet: the API server's answer to the create, with
		// the status the CRD defaults (observedGeneration 0 < generation 1).
		fresh := func(kind string, obj client.Object) string {
			GinkgoHelper()
			u := createRaw(kind, obj)
			res, err := status.Compute(u)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Status).To(Equal(status.InProgressStatus), "%s before the first reconcile: %s", kind, res.Message)
			checkArgo(kind, "not-reconciled", u, "Progressing")
			return u.GetName()
		}

		By("Device")
		server := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("srv")},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Addresses: []string{"10.213.77.1"}}}
		add("Device", fresh("Device", server), "static-addresses", "Current", "Healthy")
		// A laptop whose agent is enrolled and that never checks in (its lid
		// is closed): Ready, so GitOps health stays green.
		laptop := agentDevice(nil)
		tokenOf(laptop.Name)
		add("Device", laptop.Name, "asleep", "Current", "Healthy")
		Expect(conditionOf(laptop.Name, itmv1.DeviceConditionCheckedIn)()).To(Equal(metav1.ConditionFalse), "it never checked in")
		for range 2 {
			Expect(k8s.Create(ctx, &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("srv")},
				Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassServer, Addresses: []string{"10.213.77.2"}}})).To(Succeed())
		}
		twin := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("srv-%d", nameSeq.Load())}}
		add("Device", twin.Name, "address-conflict", "Failed", "Degraded")
		foreign := uniqueName("lt")
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.DevicesNamespace, Name: foreign + "-agent"}})).To(Succeed())
		agentDevice(func(d *itmv1.Device) { d.Name = foreign })
		add("Device", foreign, "enrolment-conflict", "Failed", "Degraded")

		By("AccessPolicy")
		ns := newNamespace(nil)
		policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ap")},
			Spec: itmv1.AccessPolicySpec{Subjects: itmv1.Subjects{Groups: []string{uniqueName("g")}},
				Destinations: []itmv1.Destination{{Namespaces: []string{ns}}}}}
		add("AccessPolicy", fresh("AccessPolicy", policy), "enforced", "Current", "Healthy")
		forbidden := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ap")},
			Spec: itmv1.AccessPolicySpec{Subjects: itmv1.Subjects{Groups: []string{uniqueName("g")}},
				Destinations: []itmv1.Destination{{Namespaces: []string{testenv.OperatorNamespace}}}}}
		Expect(k8s.Create(ctx, forbidden)).To(Succeed())
		add("AccessPolicy", forbidden.Name, "forbidden-destination", "Failed", "Degraded")

		By("AccountProvider")
		kube := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: uniqueName("users"), TokenTTL: &metav1.Duration{Duration: time.Hour}}}}
		add("AccountProvider", fresh("AccountProvider", kube), "connected", "Current", "Healthy")
		noSecret := ldapProvider(func(s *itmv1.LDAPProviderSpec) { s.BindPasswordSecretRef.Name = uniqueName("absent") })
		add("AccountProvider", noSecret.Name, "secret-missing", "InProgress", "Progressing")
		down := ldapProvider(func(s *itmv1.LDAPProviderSpec) { s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", freePort()) })
		add("AccountProvider", down.Name, "unreachable", "InProgress", "Progressing")
		unmanaged := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes,
				Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: newNamespace(nil)}}}
		Expect(k8s.Create(ctx, unmanaged)).To(Succeed())
		add("AccountProvider", unmanaged.Name, "namespace-not-managed", "Failed", "Degraded")

		By("OnboardingRequest")
		requester := impersonate(uniqueName("hr@example.com"), writeRequests)
		approver := impersonate(uniqueName("it@example.com"), writeRequests, approveRequests)
		// Created by the requester (the stamp is theirs), so it awaits an
		// approver's decision.
		awaiting := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{kube.Name} })
		Eventually(func() error { return requester.Create(ctx, awaiting.DeepCopy()) }).Should(Succeed())
		Eventually(phaseOf(awaiting.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		add("OnboardingRequest", awaiting.Name, "awaiting-approval", "InProgress", "Suspended")
		active := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{kube.Name} })
		Eventually(func() error { return requester.Create(ctx, active.DeepCopy()) }).Should(Succeed())
		Eventually(phaseOf(active.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		Expect(decide(approver, active.Name, itmv1.OnboardingConditionApproved)).To(Succeed())
		add("OnboardingRequest", active.Name, "active", "Current", "Healthy")
		denied := joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{kube.Name} })
		Eventually(func() error { return requester.Create(ctx, denied.DeepCopy()) }).Should(Succeed())
		Eventually(phaseOf(denied.Name)).Should(Equal(itmv1.OnboardingPhaseAwaitingApproval))
		Expect(decide(approver, denied.Name, itmv1.OnboardingConditionDenied)).To(Succeed())
		add("OnboardingRequest", denied.Name, "denied", "Failed", "Degraded")
		fresh("OnboardingRequest", joiner(func(r *itmv1.OnboardingRequest) { r.Spec.AccountProviders = []string{kube.Name} }))

		By("MaintenanceWindow")
		idle := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("mw")},
			Spec: itmv1.MaintenanceWindowSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"test.itmanager.io/none": uniqueName("x")}},
				Windows: []itmv1.Window{{Schedule: "0 2 * * SAT", Duration: metav1.Duration{Duration: 4 * time.Hour}}}}}
		add("MaintenanceWindow", fresh("MaintenanceWindow", idle), "idle", "Current", "Healthy")
		paused := window(map[string]string{"test.itmanager.io/none": uniqueName("x")}, func(mw *itmv1.MaintenanceWindow) { mw.Spec.Paused = true })
		add("MaintenanceWindow", paused.Name, "paused", "Current", "Suspended")

		By("each state's Argo CD health, on the live object and on its committed fixture")
		for _, s := range states {
			checkArgo(s.kind, s.state, liveObject(s.kind, s.name), s.argo)
		}

		By("kubectl wait --for=condition=Ready: passes for every Current object, times out on the others")
		user, err := env.AddUser(envtest.User{Name: "gitops-admin", Groups: []string{"system:masters"}}, nil)
		Expect(err).NotTo(HaveOccurred())
		kc, err := user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, kc, 0o600)).To(Succeed())
		waited := map[string]bool{}
		for _, s := range states {
			resource := strings.ToLower(s.kind) + "." + itmv1.GroupVersion.Group + "/" + s.name
			if s.kstatus == "Current" && !waited[s.kind] {
				waited[s.kind] = true
				out, err := kubectlWait(kubeconfig, resource, "30s")
				Expect(err).NotTo(HaveOccurred(), "kubectl wait on the Ready %s: %s", resource, out)
				Expect(out).To(ContainSubstring("condition met"))
			}
		}
		Expect(waited).To(HaveLen(len(argocd.Kinds)), "a Ready object of every kind was waited for")
		out, err := kubectlWait(kubeconfig, "accountprovider.itmanager.io/"+unmanaged.Name, "2s")
		Expect(err).To(HaveOccurred(), "kubectl wait on a Stalled AccountProvider must not pass: %s", out)
		Expect(out).To(ContainSubstring("timed out"))
		out, err = kubectlWait(kubeconfig, "onboardingrequest.itmanager.io/"+awaiting.Name, "2s")
		Expect(err).To(HaveOccurred(), "kubectl wait on a request awaiting approval must not pass: %s", out)
	})
})
