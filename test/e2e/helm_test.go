//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func helmSpecs() {
	Describe("Helm", func() {
		It("rolls out a helm upgrade with changed values cleanly: both Deployments Available on the new Pods, one leader, the webhook answering (its outage measured)", func() {
			before := podUIDs(managerPods())
			revision := uniqueName("rev")
			probe := watchWebhook()
			helm("upgrade", releaseName, env("E2E_CHART", filepath.Join(repoRoot, "charts", "itmanager")), "-n", operatorNS, "-f", valuesFile,
				"--set", "logLevel=debug", "--set-string", "podAnnotations.e2e-revision="+revision, "--wait", "--timeout", "5m")
			mgr := waitAvailable(managerDeployment(), 2)
			waitAvailable(checkinDeployment(), 0)
			figures.webhookOutage = probe()
			AddReportEntry("webhook during helm upgrade", figures.webhookOutage)
			Expect(mgr.Spec.Template.Annotations).To(HaveKeyWithValue("e2e-revision", revision))
			// The old Pods go after their grace period.
			Eventually(func(g Gomega) {
				for _, p := range managerPods() {
					g.Expect(before).NotTo(ContainElement(p.UID), "Pod %s is a new one", p.Name)
					g.Expect(p.Annotations).To(HaveKeyWithValue("e2e-revision", revision))
				}
			}).Should(Succeed())
			leaderPod()
			Expect(webhookAnswers()).To(Succeed())
		})

		It("leaves the CRDs, Devices, OnboardingRequests, accounts and the devices namespace (enrolment Secrets, Leases) in place on helm uninstall (no cascade), and a reinstall takes them up again", func() {
			provider := kubernetesProvider()
			person := onboard(provider, nil)
			laptop := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kept-laptop")},
				Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}}
			Expect(k8s.Create(ctx, laptop)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(laptop) })
			saKey := types.NamespacedName{Namespace: provider.Spec.Kubernetes.Namespace, Name: person.Name}
			sa := &corev1.ServiceAccount{}
			Expect(k8s.Get(ctx, saKey, sa)).To(Succeed())
			credsKey := types.NamespacedName{Namespace: person.Status.CredentialsSecret.Namespace, Name: person.Status.CredentialsSecret.Name}
			Expect(k8s.Get(ctx, credsKey, &corev1.Secret{})).To(Succeed())
			devicesNamespace := &corev1.Namespace{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: devicesNS}, devicesNamespace)).To(Succeed())

			By("helm uninstall")
			helm("uninstall", releaseName, "-n", operatorNS, "--wait", "--timeout", "5m")
			reinstalled := false
			DeferCleanup(func() {
				if !reinstalled {
					reinstall()
				}
			})
			Eventually(func() bool {
				return apierrors.IsNotFound(k8s.Get(ctx, managerDeployment(), &appsv1.Deployment{}))
			}).Should(BeTrue(), "the manager Deployment is gone")

			By("everything people and devices depend on still there")
			for _, o := range []client.Object{&itmv1.Device{}, &itmv1.OnboardingRequest{}, &itmv1.AccountProvider{}, &itmv1.AccessPolicy{}, &itmv1.MaintenanceWindow{}} {
				Expect(k8s.List(ctx, listOf(o), client.Limit(1))).To(Succeed(), "the CRD of %T is served", o)
			}
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(laptop), &itmv1.Device{})).To(Succeed())
			got := &itmv1.OnboardingRequest{}
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(person), got)).To(Succeed())
			Expect(got.Status.Phase).To(Equal(itmv1.OnboardingPhaseActive))
			Expect(got.DeletionTimestamp).To(BeNil())
			keptSA := &corev1.ServiceAccount{}
			Expect(k8s.Get(ctx, saKey, keptSA)).To(Succeed(), "the account")
			Expect(keptSA.UID).To(Equal(sa.UID))
			Expect(k8s.Get(ctx, credsKey, &corev1.Secret{})).To(Succeed(), "its credentials")
			keptNamespace := &corev1.Namespace{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: devicesNS}, keptNamespace)).To(Succeed(), "the devices namespace (kept by the chart)")
			Expect(keptNamespace.UID).To(Equal(devicesNamespace.UID))
			Expect(keptNamespace.DeletionTimestamp).To(BeNil(), "the devices namespace is not being deleted")

			By("reinstalling")
			reinstall()
			reinstalled = true
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(person), got)).To(Succeed())
			Expect(got.Status.Phase).To(Equal(itmv1.OnboardingPhaseActive))
			Expect(k8s.Get(ctx, saKey, keptSA)).To(Succeed())
			Expect(keptSA.UID).To(Equal(sa.UID), "the account was kept, not made again")
			Expect(k8s.Get(ctx, types.NamespacedName{Name: devicesNS}, keptNamespace)).To(Succeed())
			Expect(keptNamespace.UID).To(Equal(devicesNamespace.UID), "the reinstall took up the kept devices namespace")
		})
	})
}

func listOf(o client.Object) client.ObjectList {
	switch o.(type) {
	case *itmv1.Device:
		return &itmv1.DeviceList{}
	case *itmv1.OnboardingRequest:
		return &itmv1.OnboardingRequestList{}
	case *itmv1.AccountProvider:
		return &itmv1.AccountProviderList{}
	case *itmv1.AccessPolicy:
		return &itmv1.AccessPolicyList{}
	default:
		return &itmv1.MaintenanceWindowList{}
	}
}

// reinstall installs the chart again as make e2e did (hack/e2e.sh install),
// once the namespace the uninstall deletes (the upgrades one; the devices
// namespace is kept) is gone, and waits for it.
func reinstall() {
	GinkgoHelper()
	for _, ns := range []string{upgradesNS} {
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: ns}, &corev1.Namespace{}))
		}).WithTimeout(3*time.Minute).Should(BeTrue(), "namespace %s deleted by the uninstall", ns)
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "e2e.sh"), "install")
	cmd.Env = append(os.Environ(), "E2E_CLUSTER_DIR="+clusterDir, "E2E_VALUES="+valuesFile, "HELM="+helmBin, "KUBECTL="+kubectlBin)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "hack/e2e.sh install: %s", out)
	waitAvailable(managerDeployment(), 2)
	waitAvailable(checkinDeployment(), 0)
	leaderPod()
	Eventually(webhookAnswers).Should(Succeed())
}

func helm(args ...string) {
	GinkgoHelper()
	cmd := exec.Command(helmBin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env("KUBECONFIG", filepath.Join(clusterDir, "kubeconfig")))
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "helm %s: %s", strings.Join(args, " "), out)
}

// webhookAnswers sends the webhook a MaintenanceWindow with an unknown time
// zone (server-side dry run: nothing is stored) and reports an error unless
// the webhook refused it with its own message.
func webhookAnswers() error {
	mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "e2e-webhook-probe"}, Spec: itmv1.MaintenanceWindowSpec{
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"e2e": "nothing"}}, TimeZone: "Mars/Olympus_Mons",
		Windows: []itmv1.Window{{Schedule: "0 2 * * 6", Duration: metav1.Duration{Duration: time.Hour}}},
	}}
	c, stop := contextWithTimeout(5 * time.Second)
	defer stop()
	err := k8s.Create(c, mw, client.DryRunAll)
	switch {
	case err == nil:
		return fmt.Errorf("a MaintenanceWindow with an unknown time zone was admitted")
	case strings.Contains(err.Error(), "spec.timeZone"):
		return nil
	}
	return err
}

// watchWebhook asks the webhook every 100 ms until the returned function
// is called, which says how many calls failed and the longest run of them.
func watchWebhook() func() string {
	var (
		mu           sync.Mutex
		calls, fails int
		longest      time.Duration
		failingSince time.Time
		firstErr     string
		stop, done   = make(chan struct{}), make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			start := time.Now()
			err := webhookAnswers()
			mu.Lock()
			calls++
			if err != nil {
				fails++
				if failingSince.IsZero() {
					failingSince = start
				}
				if firstErr == "" {
					firstErr = err.Error()
				}
			} else if !failingSince.IsZero() {
				longest = max(longest, start.Sub(failingSince))
				failingSince = time.Time{}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() string {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if !failingSince.IsZero() {
			longest = max(longest, time.Since(failingSince))
		}
		s := fmt.Sprintf("%d of %d webhook calls (every 100 ms through the upgrade) failed, longest outage %s", fails, calls, longest.Round(10*time.Millisecond))
		if firstErr != "" {
			s += fmt.Sprintf(" (first error: %.200s)", firstErr)
		}
		return s
	}
}
