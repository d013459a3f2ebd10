//go:build e2e

package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func onboardingSpecs() {
	Describe("Onboarding", func() {
		It("provisions a person's Kubernetes account whose issued kubeconfig authenticates as that person from inside a Pod", func() {
			provider := kubernetesProvider()
			person := onboard(provider, nil)
			Expect(person.Status.Accounts).To(ConsistOf(itmv1.AccountStatus{Provider: provider.Name, ID: person.Name, State: itmv1.AccountStateProvisioned}))
			Expect(person.Status.CredentialsSecret).NotTo(BeNil())

			By("copying the kubeconfig Secret into a workload namespace (never printing it) and using it from a Pod")
			creds := &corev1.Secret{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: person.Status.CredentialsSecret.Namespace, Name: person.Status.CredentialsSecret.Name}, creds)).To(Succeed())
			Expect(creds.Data).To(HaveKey("kubeconfig"))
			ns := newNamespace("e2e-kubeapi")
			Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kubeconfig"},
				Data: map[string][]byte{"kubeconfig": creds.Data["kubeconfig"]}})).To(Succeed())
			saUser := fmt.Sprintf("system:serviceaccount:%s:%s", provider.Spec.Kubernetes.Namespace, person.Name)
			By("the API server authenticating the kubeconfig as the person (a right they lack is refused naming them)")
			denied := kubeapiPod(ns, "kubeapi-denied", "/api/v1/namespaces/kube-system/secrets", 403)
			Expect(podLogs(denied)).To(ContainSubstring(saUser))

			By("an AccessPolicy granting view in the namespace: the same kubeconfig lists its Pods")
			policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("view")}, Spec: itmv1.AccessPolicySpec{
				Subjects:         itmv1.Subjects{Users: []string{person.Name}},
				Destinations:     []itmv1.Destination{{Namespaces: []string{ns}}},
				KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view", Namespaces: []string{ns}}},
			}}
			Expect(k8s.Create(ctx, policy)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(policy) })
			waitAllowed(saUser, ns, rbacv1.PolicyRule{Resources: []string{"pods"}, Verbs: []string{"list"}})
			allowed := kubeapiPod(ns, "kubeapi-allowed", "/api/v1/namespaces/"+ns+"/pods", 200)
			Expect(podLogs(allowed)).To(ContainSubstring("kubeapi-denied"), "the list names the namespace's Pods")
		})
	})
}

// kubeapiPod runs the probe's kubeapi GET of path with the kubeconfig
// Secret mounted and waits for it to succeed with the status expected.
func kubeapiPod(namespace, name, path string, expect int) *corev1.Pod {
	GinkgoHelper()
	pod := probePod(namespace, name, []string{"kubeapi", "--kubeconfig=/kube/kubeconfig", "--path=" + path, fmt.Sprintf("--expect=%d", expect)}, nil)
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Volumes = []corev1.Volume{{Name: "kube", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "kubeconfig"}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kube", MountPath: "/kube", ReadOnly: true}}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.Phase).NotTo(Equal(corev1.PodFailed), "the probe failed: %s", podLogs(pod))
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodSucceeded))
	}).Should(Succeed(), "the kubeapi probe Pod %s", name)
	return pod
}

// kubernetesProvider is a Kubernetes AccountProvider in a namespace of its
// own, Ready; deleted when the spec ends.
func kubernetesProvider() *itmv1.AccountProvider {
	GinkgoHelper()
	p := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")}, Spec: itmv1.AccountProviderSpec{
		Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: uniqueName("e2e-users")}}}
	Expect(k8s.Create(ctx, p)).To(Succeed())
	DeferCleanup(func() {
		deleteAndWait(p)
		deleteAndWait(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Spec.Kubernetes.Namespace}})
	})
	Eventually(func() bool {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(p), p)
		return conditionTrue(p.Status.Conditions, itmv1.ConditionReady)
	}).Should(BeTrue(), "AccountProvider %s Ready", p.Name)
	return p
}

// onboard creates an OnboardingRequest (no approval needed: the admin may
// waive it) with the provider and devices, waits until it is Active and
// returns it; deleted (offboarding first) when the spec ends.
func onboard(provider *itmv1.AccountProvider, devices []string) *itmv1.OnboardingRequest {
	GinkgoHelper()
	o := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("alice")}, Spec: itmv1.OnboardingRequestSpec{
		Person:           itmv1.Person{DisplayName: "Alice Example", Email: "alice@example.com"},
		AccountProviders: []string{provider.Name},
		ApprovalRequired: ptr.To(false),
	}}
	for _, d := range devices {
		o.Spec.Devices = append(o.Spec.Devices, itmv1.DeviceRequest{Name: d})
	}
	Expect(k8s.Create(ctx, o)).To(Succeed())
	DeferCleanup(func() { deleteAndWait(o) })
	Eventually(func() itmv1.OnboardingPhase {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(o), o)
		return o.Status.Phase
	}).Should(Equal(itmv1.OnboardingPhaseActive), "OnboardingRequest %s Active", o.Name)
	return o
}

// probePod is a Pod of the probe image (make e2e-images), restricted
// profile, never pulled.
func probePod(namespace, name string, args []string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever, Args: args,
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

var clientset *kubernetes.Clientset

// podLogs is the Pod's log (its first container), or why there is none.
func podLogs(pod *corev1.Pod) string {
	if clientset == nil {
		cs, err := kubernetes.NewForConfig(config)
		if err != nil {
			return err.Error()
		}
		clientset = cs
	}
	c, stop := contextWithTimeout(10 * time.Second)
	defer stop()
	b, err := clientset.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(c)
	if err != nil {
		return "no log: " + err.Error()
	}
	return string(b)
}
