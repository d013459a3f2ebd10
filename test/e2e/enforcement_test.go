//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

const (
	servePort = 8080
	// maxCheckInAge of the spec's policy: a silent device is cut off this
	// long after its last check-in (the agents check in every 2s).
	maxCheckInAge = 10 * time.Second
	// flips is how many posture changes the latency figure is taken over.
	flips = 20
)

func enforcementSpecs() {
	Describe("Enforcement with real packets", func() {
		It("admits only compliant devices' TCP connections to the workload and flips the verdict as agents report posture changes, a device goes silent, or its person is offboarded", func() {
			ns := newNamespace("e2e-shop")
			target := servePod(ns)
			group := uniqueName("laptops")
			labels := map[string]string{"e2e-group": group}

			By("two devices on the node's bridge, each running the real agent: one encrypted, one not")
			encrypted := agentDevice(uniqueName("laptop-a"), labels, "24.04", true, nil)
			plain := agentDevice(uniqueName("laptop-b"), labels, "24.04", false, nil)
			reported(encrypted.name, true)
			reported(plain.name, false)

			By("the positive control: with no policy both devices reach the workload")
			Eventually(func() bool { return encrypted.reaches(target) }).Should(BeTrue(), "%s reaches %s with no policy", encrypted.name, target)
			Eventually(func() bool { return plain.reaches(target) }).Should(BeTrue(), "%s reaches %s with no policy", plain.name, target)

			By("onboarding their person and applying an AccessPolicy (after the Pod is Ready) that requires disk encryption and a fresh check-in")
			person := onboard(kubernetesProvider(), []string{encrypted.name, plain.name})
			Expect(person.Status.Devices).To(ConsistOf(encrypted.name, plain.name))
			policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("shop")}, Spec: itmv1.AccessPolicySpec{
				Subjects: itmv1.Subjects{Users: []string{person.Name}},
				Posture: &itmv1.Posture{RequireDiskEncryption: true,
					MaxCheckInAge: &metav1.Duration{Duration: maxCheckInAge}},
				Destinations: []itmv1.Destination{{Namespaces: []string{ns},
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "serve"}},
					Ports:       []itmv1.Port{{Port: servePort, Protocol: itmv1.ProtocolTCP}}}},
			}}
			Expect(k8s.Create(ctx, policy)).To(Succeed())
			DeferCleanup(func() { deleteAndWait(policy) })
			Eventually(func(g Gomega) {
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				g.Expect(policy.Status.Devices).To(Equal(itmv1.DeviceCounts{Matched: 2, Allowed: 1, Denied: 1}))
				g.Expect(conditionTrue(policy.Status.Conditions, itmv1.ConditionReady)).To(BeTrue())
			}).Should(Succeed())
			verdicts(target, map[*netDevice]bool{encrypted: true, plain: false})

			By("the second device turning compliant: its agent reports disk encryption and it gets in")
			plain.setEncrypted(true)
			reported(plain.name, true)
			verdicts(target, map[*netDevice]bool{encrypted: true, plain: true})

			By("the first device losing disk encryption: reported by its agent, it is cut off")
			encrypted.setEncrypted(false)
			reported(encrypted.name, false)
			verdicts(target, map[*netDevice]bool{encrypted: false, plain: true})

			By(fmt.Sprintf("measuring posture change at the agent → packet verdict flipped, over %d flips", flips))
			measureFlips(encrypted, target, policy, ns, labels)

			By("a silent device (its agent stopped) cut off after maxCheckInAge")
			encrypted.setEncrypted(true)
			verdicts(target, map[*netDevice]bool{encrypted: true, plain: true})
			plain.stop()
			stoppedAt := time.Now()
			Eventually(func() bool { return plain.reaches(target) }).WithTimeout(maxCheckInAge+time.Minute).Should(BeFalse(), "the silent %s is cut off", plain.name)
			cutAt := time.Now()
			lease := &coordinationv1.Lease{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: devicesNS, Name: plain.name}, lease)).To(Succeed())
			Expect(lease.Spec.RenewTime).NotTo(BeNil())
			lastCheckIn := lease.Spec.RenewTime.Time
			Expect(cutAt.Sub(lastCheckIn)).To(BeNumerically(">=", maxCheckInAge), "never cut off before maxCheckInAge")
			figures.silent = fmt.Sprintf("agent stopped %s after its last check-in; connection refused %s after that check-in (maxCheckInAge %s: %s late)",
				stoppedAt.Sub(lastCheckIn).Round(10*time.Millisecond), cutAt.Sub(lastCheckIn).Round(10*time.Millisecond), maxCheckInAge,
				(cutAt.Sub(lastCheckIn) - maxCheckInAge).Round(10*time.Millisecond))
			AddReportEntry("silent device", figures.silent)
			Eventually(func(g Gomega) {
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				g.Expect(policy.Status.Denied).To(ContainElement(HaveField("Device", plain.name)))
			}).Should(Succeed())
			Expect(encrypted.reaches(target)).To(BeTrue(), "the device still checking in keeps its access")

			By("offboarding the person cutting everything")
			Eventually(func() error {
				o := &itmv1.OnboardingRequest{}
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(person), o); err != nil {
					return err
				}
				o.Spec.Offboard = true
				return k8s.Update(ctx, o)
			}).Should(Succeed())
			verdicts(target, map[*netDevice]bool{encrypted: false, plain: false})
			Eventually(func() itmv1.OnboardingPhase {
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(person), person)
				return person.Status.Phase
			}).Should(Equal(itmv1.OnboardingPhaseOffboarded))
			Expect(getDevice(encrypted.name).Spec.Assignee).To(BeEmpty(), "offboarding unassigns the device")
		})
	})
}

// servePod runs the probe image's TCP server in namespace, waits until it
// is Ready and returns its address.
func servePod(namespace string) string {
	GinkgoHelper()
	pod := probePod(namespace, "serve", []string{"serve", "--listen=:" + strconv.Itoa(servePort)}, map[string]string{"app": "serve"})
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "serve", ContainerPort: servePort}}
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
		ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(servePort)}}}
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(podReady(pod)).To(BeTrue(), "Pod %s/%s Ready", pod.Namespace, pod.Name)
	}).Should(Succeed())
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(servePort))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// reported waits until the device checked in with disk encryption as given.
func reported(name string, encrypted bool) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		d := getDevice(name)
		g.Expect(conditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)).To(BeTrue(), "CheckedIn")
		g.Expect(d.Status.Observed).NotTo(BeNil())
		g.Expect(d.Status.Observed.DiskEncrypted).To(HaveValue(Equal(encrypted)), "diskEncrypted")
	}).Should(Succeed(), "Device %s reported diskEncrypted=%v", name, encrypted)
}

// verdicts waits until each device's connection to target is admitted
// (true) or blocked (false), then checks them all again at once.
func verdicts(target string, want map[*netDevice]bool) {
	GinkgoHelper()
	for d, ok := range want {
		Eventually(func() bool { return d.reaches(target) }).WithTimeout(time.Minute).Should(Equal(ok), "%s admitted=%v", d.name, ok)
	}
	for d, ok := range want {
		Expect(d.reaches(target)).To(Equal(ok), "%s admitted=%v, still", d.name, ok)
	}
}

// flip is one measured posture change.
type flip struct {
	admit bool
	// total: the fact written at the agent's root → the first probe that
	// saw the new verdict; status: → the Device's status showed it (the
	// agent's check-in); policy: → the NetworkPolicy changed.
	total, status, policy time.Duration
}

// measureFlips alternates d's disk encryption flips times and probes the
// connection in a tight loop (short timeouts; a blocked verdict needs two
// blocked probes in a row, so one slow answer is no flip), recording when
// each step of the chain saw the change.
func measureFlips(d *netDevice, target string, policy *itmv1.AccessPolicy, ns string, labels map[string]string) {
	GinkgoHelper()
	devRec := record(&itmv1.DeviceList{}, client.MatchingLabels(labels))
	npRec := record(&networkingv1.NetworkPolicyList{}, client.InNamespace(ns))
	admitted := d.reaches(target)
	for i := range flips {
		want := !admitted
		t0 := time.Now()
		d.setEncrypted(want)
		var seen time.Time
		blockedSince := time.Time{}
		for seen.IsZero() {
			Expect(time.Since(t0)).To(BeNumerically("<", 2*time.Minute), "flip %d to admitted=%v never happened", i, want)
			start := time.Now()
			ok := d.connect(target, 200*time.Millisecond) == nil
			switch {
			case ok && want:
				seen = start
			case !ok && !want && blockedSince.IsZero():
				blockedSince = start
			case !ok && !want:
				seen = blockedSince
			case ok:
				blockedSince = time.Time{}
			}
		}
		reported(d.name, want)
		f := flip{admit: want, total: seen.Sub(t0)}
		for _, e := range devRec.all() {
			dev := e.obj.(*itmv1.Device)
			if e.name == d.name && e.at.After(t0) && dev.Status.Observed != nil && dev.Status.Observed.DiskEncrypted != nil && *dev.Status.Observed.DiskEncrypted == want {
				f.status = e.at.Sub(t0)
				break
			}
		}
		for _, e := range npRec.all() {
			np := e.obj.(*networkingv1.NetworkPolicy)
			if e.at.After(t0) && np.Name == "itm-"+policy.Name && allows(np, d.ip) == want {
				f.policy = e.at.Sub(t0)
				break
			}
		}
		figures.flips = append(figures.flips, f)
		admitted = want
	}
	AddReportEntry("packet verdict flips", flipSummary())
	GinkgoWriter.Println(flipSummary())
}

// allows reports whether the NetworkPolicy admits addr (any ipBlock
// contains it).
func allows(np *networkingv1.NetworkPolicy, addr netip.Addr) bool {
	for _, r := range np.Spec.Ingress {
		for _, peer := range r.From {
			if peer.IPBlock == nil {
				continue
			}
			if p, err := netip.ParsePrefix(peer.IPBlock.CIDR); err == nil && p.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// percentile is the nearest-rank percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
