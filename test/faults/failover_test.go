package faults

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/controllers"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/agent"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// alwaysOpen is a schedule whose window is open now: one starts every
// minute and lasts an hour.
var alwaysOpen = []itmv1.Window{{Schedule: "* * * * *", Duration: metav1.Duration{Duration: time.Hour}}}

func updateDevice(name string, mutate func(*itmv1.Device)) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &itmv1.Device{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
			return err
		}
		mutate(d)
		return k8s.Update(ctx, d)
	})).To(Succeed())
}

func getDevice(name string) *itmv1.Device {
	d := &itmv1.Device{}
	if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
		return &itmv1.Device{}
	}
	return d
}

func upgradeState(d *itmv1.Device) string {
	if d.Status.Upgrade == nil {
		return ""
	}
	return string(d.Status.Upgrade.State)
}

func inFlight(d *itmv1.Device) bool {
	s := upgradeState(d)
	return s == string(itmv1.UpgradeStateAuthorized) || s == string(itmv1.UpgradeStateInProgress)
}

// checkedInAt waits until every device is CheckedIn and reports version.
func checkedInAt(version string, devices ...string) {
	GinkgoHelper()
	for _, name := range devices {
		Eventually(func(g Gomega) {
			d := getDevice(name)
			g.Expect(meta.IsStatusConditionTrue(d.Status.Conditions, itmv1.DeviceConditionCheckedIn)).To(BeTrue(), "CheckedIn")
			g.Expect(d.Status.Observed).NotTo(BeNil())
			g.Expect(d.Status.Observed.OSVersion).To(Equal(version))
		}).Should(Succeed(), "Device %s checked in at %s", name, version)
	}
}

// attemptsSeen are the status.upgrade.attempts values the record holds.
func attemptsSeen(r *recorder) map[int32]bool {
	out := map[int32]bool{}
	for _, e := range r.all() {
		if u := e.obj.(*itmv1.Device).Status.Upgrade; u != nil {
			out[u.Attempts] = true
		}
	}
	return out
}

// kubelet simulates a node's kubelet: it renews the node's Lease, and once
// release is closed runs the upgrade Job's pod to success and reports the
// new OS version through the Node label, as the node would after a reboot.
func kubelet(c context.Context, node string, release <-chan struct{}) {
	defer GinkgoRecover()
	key := types.NamespacedName{Namespace: device.NodeLeaseNamespace, Name: node}
	for c.Err() == nil {
		now := metav1.NewMicroTime(time.Now())
		lease := &coordinationv1.Lease{}
		if err := k8s.Get(c, key, lease); apierrors.IsNotFound(err) {
			_ = k8s.Create(c, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), RenewTime: &now}})
		} else if err == nil && now.Sub(lease.Spec.RenewTime.Time) > 2*time.Second {
			lease.Spec.RenewTime = &now
			_ = k8s.Update(c, lease)
		}
		released := false
		select {
		case <-release:
			released = true
		default:
		}
		pods := &corev1.PodList{}
		_ = k8s.List(c, pods, client.MatchingFields{"spec.nodeName": node})
		for i := range pods.Items {
			p := &pods.Items[i]
			if !released || p.Labels[controllers.LabelUpgradeDevice] == "" || (p.Status.Phase != "" && p.Status.Phase != corev1.PodPending) {
				continue
			}
			p.Status.Phase = corev1.PodSucceeded
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{
				Name: controllers.UpgradeContainer, Image: p.Spec.Containers[0].Image,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}},
			}}
			if err := k8s.Status().Update(c, p); err == nil {
				_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
					n := &corev1.Node{}
					if err := k8s.Get(c, types.NamespacedName{Name: node}, n); err != nil {
						return err
					}
					n.Labels[itmv1.LabelOSVersion] = p.Spec.Containers[0].Env[0].Value
					return k8s.Update(c, n)
				})
			}
		}
		select {
		case <-c.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// agentLaptops creates n agent laptops labelled label, targeting version
// 2.0, deleted when the spec ends, and returns their names.
func agentLaptops(prefix string, n int, label map[string]string) []string {
	GinkgoHelper()
	var devices []string
	for i := range n {
		d := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-laptop-%d", prefix, i), Labels: label},
			Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
				OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}}}
		Expect(k8s.Create(ctx, d)).To(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, d))).To(Succeed()) })
		devices = append(devices, d.Name)
	}
	return devices
}

// gatedUpgrader is an agent's upgrade command: it counts its runs, waits
// for release, then rewrites the device's os-release to the target, as a
// package manager would.
type gatedUpgrader struct {
	root    string
	release <-chan struct{}
	runs    atomic.Int32
	all     *atomic.Int32
}

func (u *gatedUpgrader) Upgrade(c context.Context, target string) error {
	u.runs.Add(1)
	u.all.Add(1)
	select {
	case <-u.release:
	case <-c.Done():
		return c.Err()
	}
	return os.WriteFile(filepath.Join(u.root, "etc", "os-release"), []byte("ID=test\nVERSION_ID=\""+target+"\"\n"), 0o644)
}

// startAgent enrols an agent for device name from its enrolment Secret, as
// an installer writes it to disk, and runs internal/agent against the
// check-in service until the spec ends.
func startAgent(name string, index int, upgrader *gatedUpgrader) {
	GinkgoHelper()
	dir := filepath.Join(GinkgoT().TempDir(), name)
	secret := &corev1.Secret{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name + "-agent"}, secret)).To(Succeed())
		l := &coordinationv1.Lease{}
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: testenv.DevicesNamespace, Name: name}, l)).To(Succeed())
		g.Expect(l.Annotations[checkin.AnnotationTokenHash]).To(Equal(checkin.HashToken(string(secret.Data[checkin.SecretKeyToken]))))
	}).Should(Succeed(), "enrolment of %s", name)
	Expect(os.MkdirAll(filepath.Join(dir, "root", "etc"), 0o755)).To(Succeed())
	for k, v := range secret.Data {
		Expect(os.WriteFile(filepath.Join(dir, k), v, 0o600)).To(Succeed())
	}
	upgrader.root = filepath.Join(dir, "root")
	Expect(os.WriteFile(filepath.Join(upgrader.root, "etc", "os-release"), []byte("ID=test\nVERSION_ID=\"1.0\"\n"), 0o644)).To(Succeed())
	addr := netip.MustParseAddr(fmt.Sprintf("10.20.0.%d", index+1))
	a := &agent.Agent{
		EnrolmentDir: dir, StateFile: filepath.Join(dir, "seq"), Version: "v0.0.0-faults",
		System: agent.System{Root: upgrader.root,
			Hostname:   func() (string, error) { return name, nil },
			Interfaces: func() ([]netip.Addr, error) { return []netip.Addr{addr}, nil }},
		Upgrader: upgrader, Interval: agentInterval, MaxBackoff: 2 * time.Second,
		Log: slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelWarn})).With("device", name),
	}
	c, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		_ = a.Run(c)
	}()
	DeferCleanup(func() {
		stop()
		<-done
	})
}

var _ = Describe("Leader failover", Label("integration"), func() {
	It("finishes a Node rollout whose leader was SIGKILLed mid-upgrade: one Job and one cordon per node, never two nodes down, no cordon left", func() {
		ensureBothRunning()
		pool := uniqueName("pool")
		label := map[string]string{"pool": pool}
		release := make(chan struct{})
		var nodes, devices []string
		for i := range 3 {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-node-%d", pool, i),
				Labels: map[string]string{"pool": pool, itmv1.LabelOSVersion: "1.0"}}}
			Expect(k8s.Create(ctx, n)).To(Succeed())
			DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, n))).To(Succeed()) })
			c, stop := context.WithCancel(ctx)
			DeferCleanup(stop)
			go kubelet(c, n.Name, release)
			nodes = append(nodes, n.Name)
			devices = append(devices, names.NodeDevice(n.Name))
		}
		for _, d := range devices {
			Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: d}, &itmv1.Device{}) }).Should(Succeed())
			updateDevice(d, func(dev *itmv1.Device) {
				dev.Labels = label
				dev.Spec.OS = &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "2.0"}
			})
		}
		checkedInAt("1.0", devices...)

		mwName := uniqueName("nodes")
		devRec := record(&itmv1.DeviceList{}, nil, client.MatchingLabels(label))
		nodeRec := record(&corev1.NodeList{}, nil, client.MatchingLabels{"pool": pool})
		jobRec := record(&batchv1.JobList{}, nil, client.InNamespace(testenv.UpgradesNamespace), client.MatchingLabels{controllers.LabelWindow: mwName})

		old := leader()
		mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: mwName}, Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: label}, Windows: alwaysOpen,
			Rollout:     itmv1.Rollout{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
			NodeUpgrade: &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1", Command: []string{"/upgrade"}},
		}}
		Expect(k8s.Create(ctx, mw)).To(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, mw))).To(Succeed()) })

		By("SIGKILLing the leader once it cordoned the first node and started its Job, before the Job's pod runs")
		Eventually(func() int { return len(jobRec.added()) }).Should(Equal(1))
		takeover := killLeader(old)
		close(release)
		takeover()

		By("the other replica finishing every node")
		for _, d := range devices {
			Eventually(func() string { return upgradeState(getDevice(d)) }).WithTimeout(90*time.Second).
				Should(Equal(string(itmv1.UpgradeStateSucceeded)), "Device %s", d)
		}
		Eventually(func(g Gomega) {
			for _, n := range nodes {
				node := nodeRec.latest()[n].(*corev1.Node)
				g.Expect(node.Spec.Unschedulable).To(BeFalse(), "Node %s left cordoned", n)
				g.Expect(node.Annotations).NotTo(HaveKey(controllers.AnnotationCordonedBy), "Node %s keeps the cordon mark", n)
			}
			for _, d := range devices {
				g.Expect(upgradeState(devRec.latest()[d].(*itmv1.Device))).To(Equal(string(itmv1.UpgradeStateSucceeded)))
			}
		}).Should(Succeed())

		By("checking the record of every transition")
		seq, peak := states(devRec, upgradeState, inFlight)
		for _, d := range devices {
			Expect(seq[d]).To(Equal([]string{"", "InProgress", "Succeeded"}), "Device %s upgraded once", d)
		}
		Expect(peak).To(Equal(1), "devices upgrading at once (maxUnavailable 1)")
		Expect(attemptsSeen(devRec)).To(Equal(map[int32]bool{1: true}), "one attempt per device")
		cordons, cordoned := states(nodeRec, func(n *corev1.Node) string { return strconv.FormatBool(n.Spec.Unschedulable) },
			func(n *corev1.Node) bool { return n.Spec.Unschedulable })
		for _, n := range nodes {
			Expect(cordons[n]).To(Equal([]string{"false", "true", "false"}), "Node %s cordoned once and uncordoned", n)
		}
		Expect(cordoned).To(Equal(1), "nodes cordoned at once (maxUnavailable 1)")
		jobs := jobRec.added()
		Expect(jobs).To(HaveLen(3), "one upgrade Job per node, none made again after the takeover")
		for _, j := range jobRec.latest() {
			Expect(j.GetName()).To(HaveSuffix("-1"), "the first attempt's Job")
		}
		for name, n := range jobs {
			Expect(n).To(Equal(1), "Job %s created once", name)
		}
		perDevice := map[string]int{}
		for _, j := range jobRec.latest() {
			perDevice[j.GetLabels()[controllers.LabelUpgradeDevice]]++
		}
		for _, d := range devices {
			Expect(perDevice[d]).To(Equal(1), "one upgrade Job for Device %s", d)
		}
		Eventually(func() itmv1.UpgradeCounts {
			got := &itmv1.MaintenanceWindow{}
			_ = k8s.Get(ctx, client.ObjectKeyFromObject(mw), got)
			return got.Status.Devices
		}).Should(Equal(itmv1.UpgradeCounts{Succeeded: 3}))
	})

	It("finishes an agent rollout whose leader was SIGKILLed with two upgrades under way: every agent upgraded once, never more than maxUnavailable in flight", func() {
		ensureBothRunning()
		ring := uniqueName("ring")
		label := map[string]string{"ring": ring}
		release := make(chan struct{})
		var runs atomic.Int32
		upgraders := map[string]*gatedUpgrader{}
		devices := agentLaptops(ring, 4, label)
		for i, d := range devices {
			upgraders[d] = &gatedUpgrader{release: release, all: &runs}
			startAgent(d, i, upgraders[d])
		}
		checkedInAt("1.0", devices...)

		devRec := record(&itmv1.DeviceList{}, nil, client.MatchingLabels(label))
		old := leader()
		mw := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("agents")}, Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: label}, Windows: alwaysOpen,
			Rollout: itmv1.Rollout{MaxUnavailable: ptr.To(intstr.FromInt32(2))},
		}}
		Expect(k8s.Create(ctx, mw)).To(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, mw))).To(Succeed()) })

		By("SIGKILLing the leader once two agents run their upgrade (InProgress recorded), two still pending")
		Eventually(runs.Load).Should(BeEquivalentTo(2))
		takeover := killLeader(old)
		close(release)
		takeover()

		By("the other replica authorizing the rest as the first two report success")
		for _, d := range devices {
			Eventually(func() string { return upgradeState(getDevice(d)) }).WithTimeout(90*time.Second).
				Should(Equal(string(itmv1.UpgradeStateSucceeded)), "Device %s", d)
		}
		Eventually(func(g Gomega) {
			for _, d := range devices {
				g.Expect(upgradeState(devRec.latest()[d].(*itmv1.Device))).To(Equal(string(itmv1.UpgradeStateSucceeded)))
			}
		}).Should(Succeed())

		By("checking the record of every transition")
		seq, peak := states(devRec, upgradeState, inFlight)
		for _, d := range devices {
			Expect(seq[d]).To(Equal([]string{"", "Authorized", "InProgress", "Succeeded"}), "Device %s upgraded once", d)
			Expect(upgraders[d].runs.Load()).To(BeEquivalentTo(1), "the agent of %s ran its upgrade once", d)
			Expect(getDevice(d).Status.Observed.OSVersion).To(Equal("2.0"))
		}
		Expect(peak).To(Equal(2), "devices in flight at once (maxUnavailable 2)")
		Expect(attemptsSeen(devRec)).To(Equal(map[int32]bool{1: true}), "one attempt per device")
		Eventually(func() itmv1.UpgradeCounts {
			got := &itmv1.MaintenanceWindow{}
			_ = k8s.Get(ctx, client.ObjectKeyFromObject(mw), got)
			return got.Status.Devices
		}).Should(Equal(itmv1.UpgradeCounts{Succeeded: 4}))
	})

	It("finishes onboardings in Kubernetes and LDAP whose leader was SIGKILLed at the first account: every account and binding exists once", func() {
		ensureBothRunning()
		users := uniqueName("users")
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.OperatorNamespace, Name: uniqueName("ldap-bind")},
			Data: map[string][]byte{"password": []byte(ldap.AdminPassword)}}
		Expect(k8s.Create(ctx, secret)).To(Succeed())
		kube := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kube")}, Spec: itmv1.AccountProviderSpec{
			Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: users}}}
		dir := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("ldap")}, Spec: itmv1.AccountProviderSpec{
			Type: itmv1.AccountProviderLDAP, LDAP: &itmv1.LDAPProviderSpec{URL: ldap.URL, Insecure: true, BindDN: ldap.AdminDN,
				BindPasswordSecretRef: itmv1.SecretKeyReference{Name: secret.Name, Key: "password"},
				UsersDN:               ldap.PeopleDN, GroupsDN: ldap.GroupsDN}}}
		for _, p := range []*itmv1.AccountProvider{kube, dir} {
			Expect(k8s.Create(ctx, p)).To(Succeed())
			Eventually(func() bool {
				got := &itmv1.AccountProvider{}
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(p), got)
				return meta.IsStatusConditionTrue(got.Status.Conditions, itmv1.ConditionReady)
			}).Should(BeTrue(), "AccountProvider %s Ready", p.Name)
		}

		first := make(chan struct{})
		var once sync.Once
		saRec := record(&corev1.ServiceAccountList{}, func(e event) {
			if e.obj.GetLabels()[accounts.LabelUser] != "" {
				once.Do(func() { close(first) })
			}
		}, client.InNamespace(users))

		kill := armKill(leader())
		group := uniqueName("team")
		// The team's access: a RoleBinding of edit in its namespace, whose
		// subjects are the ServiceAccounts onboarding makes.
		teamNS := uniqueName("team-ns")
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamNS}})).To(Succeed())
		policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("team")}, Spec: itmv1.AccessPolicySpec{
			Subjects:         itmv1.Subjects{Groups: []string{group}},
			Destinations:     []itmv1.Destination{{Namespaces: []string{teamNS}}},
			KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "edit", Namespaces: []string{teamNS}}},
		}}
		Expect(k8s.Create(ctx, policy)).To(Succeed())
		DeferCleanup(func() { Expect(ignoreGone(k8s.Delete(ctx, policy))).To(Succeed()) })
		var people []*itmv1.OnboardingRequest
		for i := range 4 {
			o := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-joiner-%d", group, i)},
				Spec: itmv1.OnboardingRequestSpec{
					Person:           itmv1.Person{DisplayName: fmt.Sprintf("Joiner %d", i), Email: fmt.Sprintf("joiner%d@example.com", i)},
					Groups:           []string{group},
					AccountProviders: []string{kube.Name, dir.Name},
					ApprovalRequired: ptr.To(false),
				}}
			Expect(k8s.Create(ctx, o)).To(Succeed())
			people = append(people, o)
		}

		By("SIGKILLing the leader the moment the first ServiceAccount appears")
		select {
		case <-first:
		case <-time.After(30 * time.Second):
			Fail("no ServiceAccount appeared within 30s")
		}
		takeover := kill()
		made := 0
		for name := range saRec.added() {
			if strings.HasPrefix(name, group) {
				made++
			}
		}
		AddReportEntry("onboarding at the kill", fmt.Sprintf("%d of %d ServiceAccounts, %d of %d LDAP entries", made, len(people), len(ldapEntries(people)), len(people)))
		takeover()

		By("the other replica making everyone Active")
		for _, o := range people {
			Eventually(func() itmv1.OnboardingPhase {
				got := &itmv1.OnboardingRequest{}
				_ = k8s.Get(ctx, client.ObjectKeyFromObject(o), got)
				return got.Status.Phase
			}).WithTimeout(60*time.Second).Should(Equal(itmv1.OnboardingPhaseActive), "OnboardingRequest %s", o.Name)
		}

		By("every account existing once, marked as the request's own")
		entries := ldapEntries(people)
		for _, o := range people {
			got := &itmv1.OnboardingRequest{}
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(o), got)).To(Succeed())
			Expect(got.Status.Accounts).To(ConsistOf(
				itmv1.AccountStatus{Provider: kube.Name, ID: o.Name, State: itmv1.AccountStateProvisioned},
				itmv1.AccountStatus{Provider: dir.Name, ID: "uid=" + o.Name + "," + ldap.PeopleDN, State: itmv1.AccountStateProvisioned},
			))
			Expect(saRec.added()[o.Name]).To(Equal(1), "ServiceAccount %s created once", o.Name)
			sas := &corev1.ServiceAccountList{}
			Expect(k8s.List(ctx, sas, client.InNamespace(users), client.MatchingLabels{accounts.LabelUser: o.Name})).To(Succeed())
			Expect(sas.Items).To(HaveLen(1))
			Expect(sas.Items[0].Annotations).To(HaveKeyWithValue(accounts.AnnotationOwnerUID, string(got.UID)))
			s := &corev1.Secret{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: users, Name: accounts.KubeconfigSecret(o.Name)}, s)).To(Succeed())
			Expect(s.Data).To(HaveKey(accounts.KubeconfigKey))
			Expect(entries[o.Name]).To(HaveLen(1), "one LDAP entry for %s", o.Name)
			Expect(entries[o.Name][0].GetAttributeValues("description")).To(ContainElement(accounts.OwnerMarkPrefix + string(got.UID)))
		}
		want := []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "itmanager:" + group}}
		for _, o := range people {
			want = append(want, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: users, Name: o.Name})
		}
		Eventually(func(g Gomega) {
			rbs := &rbacv1.RoleBindingList{}
			g.Expect(k8s.List(ctx, rbs, client.InNamespace(teamNS), client.MatchingLabels{itmv1.LabelManagedBy: itmv1.ManagedByValue})).To(Succeed())
			g.Expect(rbs.Items).To(HaveLen(1), "one RoleBinding for the team")
			g.Expect(rbs.Items[0].Name).To(Equal("itm-" + policy.Name + ".edit"))
			g.Expect(rbs.Items[0].Subjects).To(ConsistOf(want), "each person's ServiceAccount bound once")
		}).Should(Succeed())
		members := groupMembers(group)
		Expect(members).To(HaveLen(len(people)))
		for _, o := range people {
			Expect(members).To(ContainElement("uid=" + o.Name + "," + ldap.PeopleDN))
		}
	})
})

// ldapEntries are the directory's entries of each person, searched by uid
// over the whole directory.
func ldapEntries(people []*itmv1.OnboardingRequest) map[string][]*goldap.Entry {
	GinkgoHelper()
	conn, err := ldap.Admin()
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	out := map[string][]*goldap.Entry{}
	for _, o := range people {
		res, err := conn.Search(goldap.NewSearchRequest(ldap.BaseDN, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 10, false,
			"(uid="+goldap.EscapeFilter(o.Name)+")", []string{"description"}, nil))
		Expect(err).NotTo(HaveOccurred())
		if len(res.Entries) > 0 {
			out[o.Name] = res.Entries
		}
	}
	return out
}

// groupMembers are the member values of the LDAP group cn=<group>.
func groupMembers(group string) []string {
	GinkgoHelper()
	conn, err := ldap.Admin()
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	res, err := conn.Search(goldap.NewSearchRequest(ldap.GroupsDN, goldap.ScopeSingleLevel, goldap.NeverDerefAliases, 0, 10, false,
		"(cn="+goldap.EscapeFilter(group)+")", []string{"member"}, nil))
	Expect(err).NotTo(HaveOccurred())
	Expect(res.Entries).To(HaveLen(1), "group %s", group)
	return res.Entries[0].GetAttributeValues("member")
}
