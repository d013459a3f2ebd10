package controllers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// Bad input at scale: a non-admin user (as GitOps would, with a broken
// commit) creates 1,000 invalid objects of every kind at once. Every one is
// refused by the CRD schema and CEL rules, the MaintenanceWindow webhook or a
// ValidatingAdmissionPolicy, with a message naming the field; none is
// stored (a watch on every kind records it if one ever is). Meanwhile the
// operator's propagation latency (an agent reporting a posture change →
// the NetworkPolicy updated) is measured before and during the flood and
// logged as figures, never asserted.

const (
	floodPerKind = 1000
	floodWorkers = 24
	// latencySamples before the flood; during it, as many as fit.
	latencySamples = 20
)

// mistake is one realistic error of a kind, what refuses it, and what its
// refusal must say.
type mistake struct {
	kind  string
	what  string
	code  int32 // 422 Invalid (schema, CEL, webhook) or 403 Forbidden (admission policy)
	build func(name string) client.Object
	want  []string
}

// floodResult is one refused (or, wrongly, accepted) create.
type floodResult struct {
	m   *mistake
	err error
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(int(math.Ceil(q*float64(len(sorted))))-1, 0)]
}

func latencyFigures(samples []time.Duration) string {
	s := slices.Clone(samples)
	slices.Sort(s)
	if len(s) == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", len(s), percentile(s, 0.5).Round(time.Millisecond),
		percentile(s, 0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// waitAllowed waits until the API server's authorizer (which admission
// policies ask) grants user verb on the resource: RBAC is an informer there,
// and a fresh grant is not seen at once under load.
func waitAllowed(user string, attrs authorizationv1.ResourceAttributes) {
	GinkgoHelper()
	Eventually(func() bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &attrs}}
		Expect(k8s.Create(ctx, sar)).To(Succeed())
		return sar.Status.Allowed
	}).Should(BeTrue(), "%s may %s %s", user, attrs.Verb, attrs.Resource)
}

// badInputMistakes are the mistakes of every kind, for a user holding
// create on every itmanager kind, NetworkPolicy rights in okNamespace only,
// get on the Secret bindSecret only, and nothing else.
func badInputMistakes(user, okNamespace, bindSecret string) []*mistake {
	laptop := func(name string, mutate func(*itmv1.Device)) client.Object {
		d := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.DeviceSpec{
			Class: itmv1.DeviceClassLaptop, OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"},
		}}
		mutate(d)
		return d
	}
	policy := func(name string, mutate func(*itmv1.AccessPolicy)) client.Object {
		p := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.AccessPolicySpec{
			Subjects:     itmv1.Subjects{Groups: []string{"engineering"}},
			Destinations: []itmv1.Destination{{Namespaces: []string{okNamespace}, Ports: []itmv1.Port{{Port: 443}}}},
		}}
		mutate(p)
		return p
	}
	request := func(name string, mutate func(*itmv1.OnboardingRequest)) client.Object {
		r := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.OnboardingRequestSpec{
			Person: itmv1.Person{DisplayName: "Jane Doe", Email: "jane.doe@example.com"},
		}}
		mutate(r)
		return r
	}
	ldap := func(name string, mutate func(*itmv1.AccountProvider)) client.Object {
		a := &itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.AccountProviderSpec{
			Type: itmv1.AccountProviderLDAP,
			LDAP: &itmv1.LDAPProviderSpec{
				URL: "ldaps://ldap.example.com", BindDN: "cn=itmanager,dc=example,dc=com", UsersDN: "ou=people,dc=example,dc=com",
				BindPasswordSecretRef: itmv1.SecretKeyReference{Name: bindSecret, Key: "password"},
			},
		}}
		mutate(a)
		return a
	}
	window := func(name string, mutate func(*itmv1.MaintenanceWindow)) client.Object {
		m := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "nothing"}},
			Windows:  []itmv1.Window{{Schedule: "0 2 * * SAT", Duration: metav1.Duration{Duration: 4 * time.Hour}}},
		}}
		mutate(m)
		return m
	}
	ts := func(s string) *metav1.Time {
		t, err := time.Parse(time.RFC3339, s)
		Expect(err).NotTo(HaveOccurred())
		return &metav1.Time{Time: t}
	}
	u := `user "` + user + `"`
	return []*mistake{
		// Device
		{kind: "Device", what: "an unknown class", code: 422,
			build: func(n string) client.Object {
				return laptop(n, func(d *itmv1.Device) { d.Spec.Class = "Toaster" })
			}, want: []string{"spec.class", "Unsupported value", `"Toaster"`}},
		{kind: "Device", what: "a static address that is not an IP", code: 422,
			build: func(n string) client.Object {
				return laptop(n, func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.0.0.1", "10.0.0.300"} })
			}, want: []string{"spec.addresses[1]", "spec.addresses must be IP addresses"}},
		{kind: "Device", what: "nodeName on a laptop", code: 422,
			build: func(n string) client.Object {
				return laptop(n, func(d *itmv1.Device) { d.Spec.NodeName = "worker-1" })
			}, want: []string{"spec.nodeName", "may only be set when spec.class is Node"}},
		{kind: "Device", what: "a name over 63 characters", code: 422,
			build: func(n string) client.Object {
				return laptop(n+"-"+strings.Repeat("x", 63), func(*itmv1.Device) {})
			}, want: []string{"metadata.name must be at most 63"}},
		{kind: "Device", what: "an assignee set without the assign verb", code: 403,
			build: func(n string) client.Object {
				return laptop(n, func(d *itmv1.Device) { d.Spec.Assignee = "jdoe" })
			}, want: []string{"spec.assignee: " + u + " may not assign Device", `requires the verb "assign"`}},
		{kind: "Device", what: "labels set without the assign verb", code: 403,
			build: func(n string) client.Object {
				return laptop(n, func(d *itmv1.Device) { d.Labels = map[string]string{"ring": "1"} })
			}, want: []string{"metadata.labels: " + u + " may not assign Device"}},

		// AccessPolicy
		{kind: "AccessPolicy", what: "no subject", code: 422,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) { p.Spec.Subjects = itmv1.Subjects{} })
			}, want: []string{"spec.subjects", "must name at least one of groups, users or deviceSelector"}},
		{kind: "AccessPolicy", what: "port 70000", code: 422,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Ports[0].Port = 70000 })
			}, want: []string{"spec.destinations[0].ports[0].port", "should be less than or equal to 65535"}},
		{kind: "AccessPolicy", what: "endPort below port", code: 422,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) {
					p.Spec.Destinations[0].Ports[0] = itmv1.Port{Port: 8080, EndPort: ptr.To[int32](8000)}
				})
			}, want: []string{"spec.destinations[0].ports[0].endPort", "endPort must be greater than or equal to port"}},
		{kind: "AccessPolicy", what: "a name with a dot", code: 422,
			build: func(n string) client.Object {
				return policy(n+".grafana", func(*itmv1.AccessPolicy) {})
			}, want: []string{"metadata.name must be a DNS label"}},
		{kind: "AccessPolicy", what: "a destination where the author may not write NetworkPolicies", code: 403,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Namespaces = []string{okNamespace, "payments"} })
			}, want: []string{"spec.destinations[0].namespaces[1]: " + u + ` may not write NetworkPolicies in namespace "payments"`}},
		{kind: "AccessPolicy", what: "a namespaceSelector without cluster-wide NetworkPolicy rights", code: 403,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) {
					p.Spec.Destinations[0].Namespaces = nil
					p.Spec.Destinations[0].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
				})
			}, want: []string{"spec.destinations[0].namespaceSelector: " + u + " may not write NetworkPolicies in every namespace"}},
		{kind: "AccessPolicy", what: "a role its author may not bind", code: 403,
			build: func(n string) client.Object {
				return policy(n, func(p *itmv1.AccessPolicy) {
					p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: "cluster-admin"}}
				})
			}, want: []string{"spec.kubernetesAccess[0].clusterRole: " + u + ` may not bind ClusterRole "cluster-admin"`}},

		// OnboardingRequest
		{kind: "OnboardingRequest", what: "an email without @", code: 422,
			build: func(n string) client.Object {
				return request(n, func(r *itmv1.OnboardingRequest) { r.Spec.Person.Email = "jane.example.com" })
			}, want: []string{"spec.person.email", "should match"}},
		{kind: "OnboardingRequest", what: "an unknown employment type", code: 422,
			build: func(n string) client.Object {
				return request(n, func(r *itmv1.OnboardingRequest) { r.Spec.Person.EmploymentType = "Freelancer" })
			}, want: []string{"spec.person.employmentType", "Unsupported value"}},
		{kind: "OnboardingRequest", what: "endDate before startDate", code: 422,
			build: func(n string) client.Object {
				return request(n, func(r *itmv1.OnboardingRequest) {
					r.Spec.StartDate, r.Spec.EndDate = ts("2027-03-01T09:00:00Z"), ts("2027-02-28T18:00:00Z")
				})
			}, want: []string{"spec.endDate", "spec.endDate must be after spec.startDate"}},
		{kind: "OnboardingRequest", what: "a device request with both name and class", code: 422,
			build: func(n string) client.Object {
				return request(n, func(r *itmv1.OnboardingRequest) {
					r.Spec.Devices = []itmv1.DeviceRequest{{Name: "laptop-0042", Class: itmv1.DeviceClassLaptop}}
				})
			}, want: []string{"spec.devices[0]", "exactly one of name or class"}},
		{kind: "OnboardingRequest", what: "a username over 63 characters", code: 422,
			build: func(n string) client.Object {
				return request(n+"-"+strings.Repeat("u", 63), func(*itmv1.OnboardingRequest) {})
			}, want: []string{"metadata.name is the username"}},
		{kind: "OnboardingRequest", what: "approval waived without the approve verb", code: 403,
			build: func(n string) client.Object {
				return request(n, func(r *itmv1.OnboardingRequest) { r.Spec.ApprovalRequired = ptr.To(false) })
			}, want: []string{"spec.approvalRequired: " + u + ` may not set it to false: that requires the verb "approve"`}},

		// AccountProvider
		{kind: "AccountProvider", what: "an unknown type", code: 422,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) { a.Spec.Type = "ActiveDirectory" })
			}, want: []string{"spec.type", "Unsupported value"}},
		{kind: "AccountProvider", what: "plain ldap:// without StartTLS", code: 422,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) { a.Spec.LDAP.URL = "ldap://ldap.example.com:389" })
			}, want: []string{"spec.ldap.url", "ldap:// sends the bind password in clear text"}},
		{kind: "AccountProvider", what: "a token TTL over 720h", code: 422,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) {
					a.Spec.Type, a.Spec.LDAP = itmv1.AccountProviderKubernetes, nil
					a.Spec.Kubernetes = &itmv1.KubernetesProviderSpec{TokenTTL: &metav1.Duration{Duration: 8760 * time.Hour}}
				})
			}, want: []string{"spec.kubernetes.tokenTTL", "must be at most 720h"}},
		{kind: "AccountProvider", what: "a kube-system namespace", code: 422,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) {
					a.Spec.Type, a.Spec.LDAP = itmv1.AccountProviderKubernetes, nil
					a.Spec.Kubernetes = &itmv1.KubernetesProviderSpec{Namespace: "kube-system"}
				})
			}, want: []string{"spec.kubernetes.namespace", "must not be default or a kube-* namespace"}},
		{kind: "AccountProvider", what: "a bind password Secret its author may not read", code: 403,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) { a.Spec.LDAP.BindPasswordSecretRef.Name = "ldap-admin" })
			}, want: []string{"spec.ldap.bindPasswordSecretRef.name: " + u + ` may not get Secret "` + testenv.OperatorNamespace + `/ldap-admin"`}},
		{kind: "AccountProvider", what: "a Kubernetes provider where its author may not mint accounts", code: 403,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) {
					a.Spec.Type, a.Spec.LDAP, a.Spec.Kubernetes = itmv1.AccountProviderKubernetes, nil, &itmv1.KubernetesProviderSpec{}
				})
			}, want: []string{"spec.kubernetes.namespace: " + u + ` may not create serviceaccounts in namespace "itmanager-users"`}},
		{kind: "AccountProvider", what: "default: true without the approve verb", code: 403,
			build: func(n string) client.Object {
				return ldap(n, func(a *itmv1.AccountProvider) { a.Spec.Default = true })
			}, want: []string{"spec.default: " + u + " may not make AccountProvider", `requires the verb "approve"`}},

		// MaintenanceWindow
		{kind: "MaintenanceWindow", what: "no window", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) { m.Spec.Windows = []itmv1.Window{} })
			}, want: []string{"spec.windows", "at least 1 items"}},
		{kind: "MaintenanceWindow", what: "maxUnavailable above 100%", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) { m.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromString("150%")) })
			}, want: []string{"spec.rollout.maxUnavailable", "percentage from 0% to 100%"}},
		{kind: "MaintenanceWindow", what: "a blackout that ends before it starts", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) {
					m.Spec.Blackouts = []itmv1.Blackout{{Start: ts("2026-12-20T00:00:00Z"), End: ts("2026-12-19T00:00:00Z")}}
				})
			}, want: []string{"spec.blackouts[0].end", "end must be after start"}},
		{kind: "MaintenanceWindow", what: "an hour out of range (webhook)", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 25 * * SAT" })
			}, want: []string{"spec.windows[0].schedule", "invalid cron expression", "25 is out of range 0-23"}},
		{kind: "MaintenanceWindow", what: "day-of-month and day-of-week both restricted (webhook)", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Schedule = "0 2 1-7 * SAT" })
			}, want: []string{"spec.windows[0].schedule", "are both restricted"}},
		{kind: "MaintenanceWindow", what: "an unknown time zone (webhook)", code: 422,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) { m.Spec.TimeZone = "Europe/Atlantis" })
			}, want: []string{"spec.timeZone", `unknown IANA time zone "Europe/Atlantis"`}},
		{kind: "MaintenanceWindow", what: "a nodeUpgrade without Job and Node rights", code: 403,
			build: func(n string) client.Object {
				return window(n, func(m *itmv1.MaintenanceWindow) {
					m.Spec.NodeUpgrade = &itmv1.NodeUpgrade{Image: "registry.example/os-upgrader:1", Command: []string{"/upgrade"}}
				})
			}, want: []string{"spec.nodeUpgrade: " + u + ` may not create Jobs in namespace "` + testenv.UpgradesNamespace + `" nor patch Nodes`}},
	}
}

// recordAdded watches list's kind and records the name of every object
// added (or changed) whose name starts with prefix.
func recordAdded(wc client.WithWatch, list client.ObjectList, prefix string, seen *sync.Map) {
	GinkgoHelper()
	w, err := wc.Watch(ctx, list)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			if o, ok := ev.Object.(client.Object); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) && strings.HasPrefix(o.GetName(), prefix) {
				seen.Store(fmt.Sprintf("%T/%s", o, o.GetName()), true)
			}
		}
	}()
}

// namesWithPrefix are the names in list that start with prefix.
func namesWithPrefix(list client.ObjectList, prefix string) []string {
	GinkgoHelper()
	items, err := meta.ExtractList(list)
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, o := range items {
		if n := o.(client.Object).GetName(); strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// stamped is a watch event with the time it arrived.
type stamped struct {
	at  time.Time
	obj runtime.Object
}

// stampedWatch watches list and timestamps each event as it arrives, so a
// reader that is busy elsewhere still learns when it happened.
func stampedWatch(wc client.WithWatch, list client.ObjectList, opts ...client.ListOption) <-chan stamped {
	GinkgoHelper()
	w, err := wc.Watch(ctx, list, opts...)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	ch := make(chan stamped, 4096)
	go func() {
		defer close(ch)
		for ev := range w.ResultChan() {
			ch <- stamped{at: time.Now(), obj: ev.Object}
		}
	}()
	return ch
}

var _ = Describe("Bad input at scale", func() {
	It("refuses 1,000 invalid objects of every kind from a non-admin user, each with a message naming the field, stores none, and logs propagation latency before and during the flood", func() {
		user := uniqueName("gitops-bot")
		okNamespace := newNamespace(nil)
		bindSecret := uniqueName("ldap-bind")
		itmResources := []string{"devices", "accesspolicies", "onboardingrequests", "accountproviders", "maintenancewindows"}
		impersonate(user, rbacv1.PolicyRule{APIGroups: []string{"itmanager.io"}, Resources: itmResources, Verbs: []string{"get", "list", "watch", "create"}})
		grantIn(okNamespace, user, writeNetworkPolicies)
		grantIn(testenv.OperatorNamespace, user, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{bindSecret}, Verbs: []string{"get"}})
		for _, r := range itmResources {
			waitAllowed(user, authorizationv1.ResourceAttributes{Group: "itmanager.io", Resource: r, Verb: "create"})
		}
		waitAllowed(user, authorizationv1.ResourceAttributes{Group: "networking.k8s.io", Resource: "networkpolicies", Namespace: okNamespace, Verb: "update"})
		waitAllowed(user, authorizationv1.ResourceAttributes{Resource: "secrets", Namespace: testenv.OperatorNamespace, Name: bindSecret, Verb: "get"})

		// The flood's client: the user, unthrottled on the client side (the
		// API server's priority and fairness is what pushes back).
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		cfg.QPS, cfg.Burst = 5000, 5000
		flooder, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())

		prefix := uniqueName("bad")
		wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme})
		Expect(err).NotTo(HaveOccurred())
		var stored sync.Map
		for _, l := range []client.ObjectList{&itmv1.DeviceList{}, &itmv1.AccessPolicyList{}, &itmv1.OnboardingRequestList{},
			&itmv1.AccountProviderList{}, &itmv1.MaintenanceWindowList{}} {
			recordAdded(wc, l, prefix+"-", &stored)
		}

		By("a device and a policy whose NetworkPolicy follows the device's reported disk encryption")
		ns := newNamespace(nil)
		label := map[string]string{"fleet": uniqueName("f")}
		dev := agentDevice(func(d *itmv1.Device) { d.Labels = label })
		token := tokenOf(dev.Name)
		p := accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects.DeviceSelector = &metav1.LabelSelector{MatchLabels: label}
			p.Spec.Posture = &itmv1.Posture{RequireDiskEncryption: true}
			p.Spec.Destinations = []itmv1.Destination{{Namespaces: []string{ns}, Ports: []itmv1.Port{{Port: 443}}}}
		})
		npName := "itm-" + p.Name
		const addr = "10.44.0.1"
		npEvents := stampedWatch(wc, &networkingv1.NetworkPolicyList{}, client.InNamespace(ns))
		devEvents := stampedWatch(wc, &itmv1.DeviceList{}, client.MatchingFields{"metadata.name": dev.Name})
		var seq uint64
		encrypted := false
		// sample reports the opposite disk encryption and returns how long
		// it took from the agent's request to the NetworkPolicy's change
		// arriving on a watch (total), and the operator's part of it: from
		// the Device's new status arriving on a watch to that change.
		sample := func() (total, operator time.Duration) {
			GinkgoHelper()
			encrypted = !encrypted
			want := []string{"isolated"}
			if encrypted {
				want = []string{addr + "/32"}
			}
			fs := facts(addr)
			fs.DiskEncrypted = ptr.To(encrypted)
			seq++
			body, err := json.Marshal(checkin.Request{Sequence: seq, Facts: fs})
			Expect(err).NotTo(HaveOccurred())
			answered := paceCheckIn(dev.Name)
			start := time.Now()
			code := postRaw(dev.Name, token, "application/json", body).code
			answered()
			Expect(code).To(Equal(200))
			timeout := time.After(30 * time.Second)
			// Events before this sample's report carry the previous verdict,
			// so the first that match are this sample's.
			var devAt, npAt time.Time
			for devAt.IsZero() || npAt.IsZero() {
				select {
				case ev, ok := <-devEvents:
					Expect(ok).To(BeTrue(), "the Device watch ended")
					if d, isDev := ev.obj.(*itmv1.Device); isDev && devAt.IsZero() && d.Status.Observed != nil &&
						d.Status.Observed.DiskEncrypted != nil && *d.Status.Observed.DiskEncrypted == encrypted {
						devAt = ev.at
					}
				case ev, ok := <-npEvents:
					Expect(ok).To(BeTrue(), "the NetworkPolicy watch ended")
					np, isNP := ev.obj.(*networkingv1.NetworkPolicy)
					if !isNP || np.Name != npName || !npAt.IsZero() {
						continue
					}
					got := []string{"isolated"}
					if len(np.Spec.Ingress) > 0 {
						got = nil
						for _, f := range np.Spec.Ingress[0].From {
							got = append(got, f.IPBlock.CIDR)
						}
					}
					if slices.Equal(got, want) {
						npAt = ev.at
					}
				case <-timeout:
					Fail(fmt.Sprintf("NetworkPolicy %s/%s did not become %v within 30s of the check-in", ns, npName, want))
				}
			}
			return npAt.Sub(start), npAt.Sub(devAt)
		}
		// The first report makes the device allowed; from then on every
		// sample flips it.
		sample()
		var before, beforeOperator []time.Duration
		for range latencySamples {
			t, o := sample()
			before, beforeOperator = append(before, t), append(beforeOperator, o)
		}

		By(fmt.Sprintf("the flood: %d invalid objects of each of 5 kinds, %d at a time, while the latency is sampled", floodPerKind, floodWorkers))
		mistakes := badInputMistakes(user, okNamespace, bindSecret)
		byKind := map[string][]*mistake{}
		var kinds []string
		for _, m := range mistakes {
			if byKind[m.kind] == nil {
				kinds = append(kinds, m.kind)
			}
			byKind[m.kind] = append(byKind[m.kind], m)
		}
		Expect(kinds).To(HaveLen(5))
		type job struct {
			m    *mistake
			name string
		}
		jobs := make(chan job, floodPerKind*len(kinds))
		for i := range floodPerKind {
			for _, k := range kinds {
				ms := byKind[k]
				jobs <- job{m: ms[i%len(ms)], name: fmt.Sprintf("%s-%s-%d", prefix, strings.ToLower(k), i)}
			}
		}
		close(jobs)
		results := make(chan floodResult, cap(jobs))
		var floodDone atomic.Bool
		var wg sync.WaitGroup
		floodStart := time.Now()
		for range floodWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					results <- floodResult{m: j.m, err: flooder.Create(ctx, j.m.build(j.name))}
				}
			}()
		}
		go func() { wg.Wait(); floodDone.Store(true) }()
		var during, duringOperator []time.Duration
		for !floodDone.Load() {
			t, o := sample()
			during, duringOperator = append(during, t), append(duringOperator, o)
		}
		floodTook := time.Since(floodStart)
		close(results)

		By("every object refused, with the message of its mistake")
		type tally struct {
			refused int
			example string
			wrong   []string
		}
		tallies := map[*mistake]*tally{}
		total := 0
		for r := range results {
			total++
			t := tallies[r.m]
			if t == nil {
				t = &tally{}
				tallies[r.m] = t
			}
			if r.err == nil {
				t.wrong = append(t.wrong, "accepted")
				continue
			}
			msg := r.err.Error()
			var code int32
			var status apierrors.APIStatus
			if errors.As(r.err, &status) {
				code = status.Status().Code
			}
			ok := code == r.m.code
			for _, w := range r.m.want {
				ok = ok && strings.Contains(msg, w)
			}
			if !ok {
				if len(t.wrong) < 3 {
					t.wrong = append(t.wrong, fmt.Sprintf("%d %s", code, msg))
				}
				continue
			}
			t.refused++
			t.example = msg
		}
		Expect(total).To(Equal(floodPerKind * len(kinds)))
		for _, m := range mistakes {
			t := tallies[m]
			Expect(t).NotTo(BeNil(), "%s: %s never tried", m.kind, m.what)
			GinkgoWriter.Printf("%s, %s: %d refused, e.g. %s\n", m.kind, m.what, t.refused, t.example)
			Expect(t.wrong).To(BeEmpty(), "%s, %s: refused otherwise than expected (want %d with %q)", m.kind, m.what, m.code, m.want)
		}

		By("the same user's valid objects are accepted (so the refusals were the mistakes), and the watches saw only them")
		okObjects := []client.Object{
			&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-ok"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassOther}},
			&itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-ok"}, Spec: itmv1.AccessPolicySpec{
				Mode: itmv1.AccessModeAudit, Subjects: itmv1.Subjects{Users: []string{uniqueName("nobody")}},
				Destinations: []itmv1.Destination{{Namespaces: []string{okNamespace}}},
			}},
			&itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-ok"}, Spec: itmv1.OnboardingRequestSpec{
				Person: itmv1.Person{DisplayName: "Valid Person", Email: "valid@example.com"},
			}},
			&itmv1.AccountProvider{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-ok"}, Spec: itmv1.AccountProviderSpec{
				Type: itmv1.AccountProviderLDAP, LDAP: &itmv1.LDAPProviderSpec{
					URL: "ldaps://127.0.0.1:1", BindDN: "cn=itmanager,dc=example,dc=com", UsersDN: "ou=people,dc=example,dc=com",
					BindPasswordSecretRef: itmv1.SecretKeyReference{Name: bindSecret, Key: "password"},
				},
			}},
			&itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-ok"}, Spec: itmv1.MaintenanceWindowSpec{
				Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": uniqueName("nothing")}},
				Windows:  []itmv1.Window{{Schedule: "0 2 * * SAT", Duration: metav1.Duration{Duration: time.Hour}}},
			}},
		}
		var want []string
		for _, o := range okObjects {
			Expect(flooder.Create(ctx, o)).To(Succeed(), "%T", o)
			DeferCleanup(func() { _ = k8s.Delete(ctx, o) })
			want = append(want, fmt.Sprintf("%T/%s", o, o.GetName()))
		}
		// The valid objects were created last: once every watch has seen
		// its own, it has seen everything stored before it.
		seen := func() []string {
			var out []string
			stored.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
			return out
		}
		Eventually(seen).Should(ContainElements(want))
		Expect(seen()).To(ConsistOf(want), "no invalid object was ever stored")
		for _, l := range []client.ObjectList{&itmv1.DeviceList{}, &itmv1.AccessPolicyList{}, &itmv1.OnboardingRequestList{},
			&itmv1.AccountProviderList{}, &itmv1.MaintenanceWindowList{}} {
			Expect(k8s.List(ctx, l)).To(Succeed())
			Expect(namesWithPrefix(l, prefix+"-")).To(ConsistOf(prefix+"-ok"), "%T", l)
		}

		figures := fmt.Sprintf("flood: %d creates in %s (%.0f/s, %d workers)\n"+
			"agent check-in sent → NetworkPolicy changed (watch): before %s; during %s\n"+
			"operator only (Device status changed → NetworkPolicy changed, both on watches): before %s; during %s",
			total, floodTook.Round(time.Millisecond), float64(total)/floodTook.Seconds(), floodWorkers,
			latencyFigures(before), latencyFigures(during), latencyFigures(beforeOperator), latencyFigures(duringOperator))
		GinkgoWriter.Println(figures)
		AddReportEntry("bad input at scale", figures)
	})
})
