package v1alpha1_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var seq int

// uniqueName gives every test object its own name, so entries never collide.
func uniqueName(prefix string) string {
	seq++
	return fmt.Sprintf("%s-%d", prefix, seq)
}

// expectRejected creates obj and expects the API server to refuse it as
// Invalid with a message containing every one of want.
func expectRejected(obj client.Object, want ...string) {
	GinkgoHelper()
	err := k8s.Create(ctx, obj)
	Expect(err).To(HaveOccurred(), "the API server accepted a bad %T", obj)
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got: %v", err)
	GinkgoWriter.Println(err)
	for _, w := range want {
		Expect(err.Error()).To(ContainSubstring(w))
	}
}

func device(mutate func(*itmv1.Device)) *itmv1.Device {
	d := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("laptop")},
		Spec: itmv1.DeviceSpec{
			Class:     itmv1.DeviceClassLaptop,
			Hardware:  &itmv1.Hardware{Vendor: "Lenovo", Model: "ThinkPad X1", SerialNumber: "PF3ABCDE"},
			OS:        &itmv1.OSSpec{Family: itmv1.OSFamilyLinux, TargetVersion: "24.04"},
			Addresses: []string{"10.20.0.5", "fd00::5"},
		},
	}
	if mutate != nil {
		mutate(d)
	}
	return d
}

func accessPolicy(mutate func(*itmv1.AccessPolicy)) *itmv1.AccessPolicy {
	p := &itmv1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("eng")},
		Spec: itmv1.AccessPolicySpec{
			Subjects: itmv1.Subjects{Groups: []string{"engineering"}},
			Posture: &itmv1.Posture{
				MaxCheckInAge:         &metav1.Duration{Duration: 15 * time.Minute},
				RequireDiskEncryption: true,
				MinOSVersions:         map[itmv1.OSFamily]string{itmv1.OSFamilyMacOS: "14.2"},
			},
			Destinations: []itmv1.Destination{{
				Namespaces: []string{"grafana"},
				Ports:      []itmv1.Port{{Port: 3000}},
			}},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func onboarding(mutate func(*itmv1.OnboardingRequest)) *itmv1.OnboardingRequest {
	o := &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("jdoe")},
		Spec: itmv1.OnboardingRequestSpec{
			Person: itmv1.Person{DisplayName: "Jane Doe", Email: "jane.doe@example.com"},
			Groups: []string{"engineering"},
		},
	}
	if mutate != nil {
		mutate(o)
	}
	return o
}

func kubernetesProvider(mutate func(*itmv1.AccountProvider)) *itmv1.AccountProvider {
	a := &itmv1.AccountProvider{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kubernetes")},
		Spec: itmv1.AccountProviderSpec{
			Type:       itmv1.AccountProviderKubernetes,
			Kubernetes: &itmv1.KubernetesProviderSpec{},
		},
	}
	if mutate != nil {
		mutate(a)
	}
	return a
}

func ldapSpec() *itmv1.LDAPProviderSpec {
	return &itmv1.LDAPProviderSpec{
		URL:                   "ldaps://ldap.example.com:636",
		BindDN:                "cn=itmanager,dc=example,dc=com",
		BindPasswordSecretRef: itmv1.SecretKeyReference{Name: "ldap-bind", Key: "password"},
		UsersDN:               "ou=people,dc=example,dc=com",
	}
}

func maintenanceWindow(mutate func(*itmv1.MaintenanceWindow)) *itmv1.MaintenanceWindow {
	m := &itmv1.MaintenanceWindow{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("weekly")},
		Spec: itmv1.MaintenanceWindowSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"ring": "1"}},
			TimeZone: "Europe/Berlin",
			Windows:  []itmv1.Window{{Schedule: "0 2 * * SAT", Duration: metav1.Duration{Duration: 4 * time.Hour}}},
		},
	}
	if mutate != nil {
		mutate(m)
	}
	return m
}

func ts(s string) *metav1.Time {
	// Table entries are built when the spec tree is, before Gomega can fail
	// a test, so a bad literal panics instead.
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &metav1.Time{Time: t}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

var _ = Describe("Device", func() {
	It("accepts a valid device and defaults lifecycle to Active", func() {
		d := device(nil)
		Expect(k8s.Create(ctx, d)).To(Succeed())
		Expect(d.Spec.Lifecycle).To(Equal(itmv1.DeviceLifecycleActive))
	})

	It("accepts the check-in service's observed facts before the operator ever wrote status", func() {
		d := device(nil)
		Expect(k8s.Create(ctx, d)).To(Succeed())
		u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"observed": map[string]any{"osVersion": "24.04"}}}}
		u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("Device"))
		u.SetName(d.Name)
		Expect(k8s.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("itmanager-checkin"))).To(Succeed())
	})

	It("accepts a Node device that names its Node", func() {
		Expect(k8s.Create(ctx, device(func(d *itmv1.Device) {
			d.Spec.Class = itmv1.DeviceClassNode
			d.Spec.NodeName = "worker-1"
		}))).To(Succeed())
	})

	It("refuses an assignee on a Node device on update too: adding one, or turning an assigned laptop into a Node", func() {
		node := device(func(d *itmv1.Device) { d.Spec.Class, d.Spec.NodeName = itmv1.DeviceClassNode, "worker-1" })
		Expect(k8s.Create(ctx, node)).To(Succeed())
		node.Spec.Assignee = "jdoe"
		err := k8s.Update(ctx, node)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got: %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.assignee: Invalid value"))
		Expect(err.Error()).To(ContainSubstring("Node devices are infrastructure, never a person's device"))

		laptop := device(func(d *itmv1.Device) { d.Spec.Assignee = "jdoe" })
		Expect(k8s.Create(ctx, laptop)).To(Succeed())
		laptop.Spec.Class, laptop.Spec.NodeName = itmv1.DeviceClassNode, "worker-1"
		err = k8s.Update(ctx, laptop)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got: %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.assignee may not be set when spec.class is Node"))
	})

	DescribeTable("rejects", expectRejected,
		Entry("a missing class", device(func(d *itmv1.Device) { d.Spec.Class = "" }),
			"spec.class", "Unsupported value"),
		Entry("an unknown class", device(func(d *itmv1.Device) { d.Spec.Class = "Toaster" }),
			"spec.class", "Unsupported value", `"Toaster"`),
		Entry("an unknown lifecycle", device(func(d *itmv1.Device) { d.Spec.Lifecycle = "Stolen" }),
			"spec.lifecycle", "Unsupported value"),
		Entry("an unknown OS family", device(func(d *itmv1.Device) { d.Spec.OS.Family = "BeOS" }),
			"spec.os.family", "Unsupported value"),
		Entry("a static address that is not an IP", device(func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.0.0.1", "300.1.1.1"} }),
			"spec.addresses[1]", "spec.addresses must be IP addresses"),
		Entry("a CIDR instead of an address", device(func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.0.0.0/24"} }),
			"spec.addresses[0]", "must be IP addresses"),
		Entry("more than 8 static addresses", device(func(d *itmv1.Device) {
			d.Spec.Addresses = nil
			for i := range 9 {
				d.Spec.Addresses = append(d.Spec.Addresses, fmt.Sprintf("10.0.0.%d", i+1))
			}
		}), "spec.addresses", "Too many"),
		Entry("a duplicate static address", device(func(d *itmv1.Device) { d.Spec.Addresses = []string{"10.0.0.1", "10.0.0.1"} }),
			"spec.addresses[1]", "Duplicate value"),
		Entry("nodeName on a laptop", device(func(d *itmv1.Device) { d.Spec.NodeName = "worker-1" }),
			"spec.nodeName", "may only be set when spec.class is Node"),
		Entry("a Node device without nodeName", device(func(d *itmv1.Device) { d.Spec.Class = itmv1.DeviceClassNode }),
			"spec.nodeName", "is required when spec.class is Node"),
		Entry("an assignee that is not a username", device(func(d *itmv1.Device) { d.Spec.Assignee = "Jane Doe" }),
			"spec.assignee", "should match"),
		Entry("an assignee on a Node device", device(func(d *itmv1.Device) {
			d.Spec.Class, d.Spec.NodeName, d.Spec.Assignee = itmv1.DeviceClassNode, "worker-1", "jdoe"
		}), "spec.assignee", "may not be set when spec.class is Node"),
		Entry("an overlong vendor", device(func(d *itmv1.Device) { d.Spec.Hardware.Vendor = strings.Repeat("v", 129) }),
			"spec.hardware.vendor", "Too long"),
		Entry("a name longer than 63 characters", device(func(d *itmv1.Device) { d.Name = strings.Repeat("d", 64) }),
			"metadata.name must be at most 63"),
	)
})

var _ = Describe("AccessPolicy", func() {
	It("accepts a valid policy, defaults mode and leaves an omitted protocol omitted (a default inside the atomic ports list would make every re-apply a write; the compiler reads it as TCP)", func() {
		p := accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Ports[0].Protocol = "" })
		Expect(k8s.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Mode).To(Equal(itmv1.AccessModeEnforce))
		Expect(p.Spec.Destinations[0].Ports[0].Protocol).To(BeEmpty())
	})

	It("accepts a name of exactly 50 characters", func() {
		Expect(k8s.Create(ctx, accessPolicy(func(p *itmv1.AccessPolicy) { p.Name = strings.Repeat("a", 50) }))).To(Succeed())
	})

	DescribeTable("rejects", expectRejected,
		Entry("no subject at all", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Subjects = itmv1.Subjects{} }),
			"spec.subjects", "must name at least one of groups, users or deviceSelector"),
		Entry("empty subject lists", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Subjects = itmv1.Subjects{Groups: []string{}, Users: []string{}}
		}), "spec.subjects", "must name at least one"),
		Entry("a group name with spaces", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Subjects.Groups = []string{"Eng Team"} }),
			"spec.subjects.groups[0]", "should match"),
		Entry("no destination", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations = nil }),
			"spec.destinations", "Required value"),
		Entry("an empty destination list", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations = []itmv1.Destination{} }),
			"spec.destinations", "at least 1 items"),
		Entry("a destination with both namespaces and namespaceSelector", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Destinations[0].NamespaceSelector = &metav1.LabelSelector{}
		}), "spec.destinations[0]", "exactly one of namespaces or namespaceSelector"),
		Entry("a destination with neither", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Namespaces = nil }),
			"spec.destinations[0]", "exactly one of namespaces or namespaceSelector"),
		Entry("a namespace that is not a DNS label", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Namespaces = []string{"Team_A"} }),
			"spec.destinations[0].namespaces[0]", "should match"),
		Entry("port 0", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Ports[0].Port = 0 }),
			"spec.destinations[0].ports[0].port", "should be greater than or equal to 1"),
		Entry("port 70000", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Ports[0].Port = 70000 }),
			"spec.destinations[0].ports[0].port", "should be less than or equal to 65535"),
		Entry("endPort below port", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Destinations[0].Ports[0] = itmv1.Port{Port: 8080, EndPort: ptr.To[int32](8000)}
		}), "spec.destinations[0].ports[0].endPort", "endPort must be greater than or equal to port"),
		Entry("an unknown protocol", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Destinations[0].Ports[0].Protocol = "ICMP" }),
			"spec.destinations[0].ports[0].protocol", "Unsupported value"),
		Entry("an unknown mode", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Mode = "Permissive" }),
			"spec.mode", "Unsupported value"),
		Entry("a negative maxCheckInAge", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Posture.MaxCheckInAge = dur(-5 * time.Minute) }),
			"spec.posture.maxCheckInAge", "should match"),
		Entry("a zero maxCheckInAge", accessPolicy(func(p *itmv1.AccessPolicy) { p.Spec.Posture.MaxCheckInAge = dur(0) }),
			"spec.posture.maxCheckInAge", "must be a positive duration"),
		Entry("minOSVersions for an unknown family", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Posture.MinOSVersions = map[itmv1.OSFamily]string{"BeOS": "5"}
		}), "spec.posture.minOSVersions", "keys must be OS families"),
		Entry("a minOSVersion that is not dotted numeric", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.Posture.MinOSVersions = map[itmv1.OSFamily]string{itmv1.OSFamilyLinux: "bookworm"}
		}), "spec.posture.minOSVersions", "dotted numeric versions"),
		Entry("an empty clusterRole", accessPolicy(func(p *itmv1.AccessPolicy) {
			p.Spec.KubernetesAccess = []itmv1.KubernetesAccess{{ClusterRole: ""}}
		}), "spec.kubernetesAccess[0].clusterRole", "at least 1 chars long"),
		Entry("a name longer than 50 characters", accessPolicy(func(p *itmv1.AccessPolicy) { p.Name = strings.Repeat("a", 51) }),
			"metadata.name must be a DNS label of at most 50 characters"),
		Entry("a name with a dot", accessPolicy(func(p *itmv1.AccessPolicy) { p.Name = "eng.grafana" }),
			"metadata.name must be a DNS label"),
	)
})

var _ = Describe("OnboardingRequest", func() {
	It("accepts a valid request and defaults approvalRequired to true", func() {
		o := onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.StartDate = ts("2026-12-01T09:00:00+01:00")
			o.Spec.EndDate = ts("2027-06-30T18:00:00+02:00")
		})
		Expect(k8s.Create(ctx, o)).To(Succeed())
		Expect(o.Spec.ApprovalRequired).To(Equal(ptr.To(true)))
	})

	It("keeps an explicit approvalRequired: false as false", func() {
		o := onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.ApprovalRequired = ptr.To(false) })
		Expect(k8s.Create(ctx, o)).To(Succeed())
		Expect(o.Spec.ApprovalRequired).To(Equal(ptr.To(false)))
	})

	It("refuses to unset offboard, naming the field", func() {
		o := onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Offboard = true })
		Expect(k8s.Create(ctx, o)).To(Succeed())
		o.Spec.Offboard = false
		err := k8s.Update(ctx, o)
		Expect(err).To(MatchError(And(ContainSubstring("spec.offboard"), ContainSubstring("offboarding is final"))))
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(o), o)).To(Succeed())
		o.Spec.Person.Title = "Alumna"
		Expect(k8s.Update(ctx, o)).To(Succeed(), "other edits of an offboarded record are fine")
	})

	DescribeTable("rejects", expectRejected,
		Entry("an email without @", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Person.Email = "jane.example.com" }),
			"spec.person.email", "should match"),
		Entry("an email with spaces", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Person.Email = "jane doe@example.com" }),
			"spec.person.email"),
		Entry("a missing display name", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Person.DisplayName = "" }),
			"spec.person.displayName", "at least 1 chars long"),
		Entry("an unknown employment type", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Person.EmploymentType = "Freelancer" }),
			"spec.person.employmentType", "Unsupported value"),
		Entry("a manager that is not a username", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Person.Manager = "Big Boss" }),
			"spec.person.manager", "should match"),
		Entry("endDate before startDate", onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.StartDate = ts("2026-12-01T09:00:00Z")
			o.Spec.EndDate = ts("2026-11-30T09:00:00Z")
		}), "spec.endDate", "spec.endDate must be after spec.startDate"),
		Entry("endDate equal to startDate", onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.StartDate = ts("2026-12-01T09:00:00Z")
			o.Spec.EndDate = ts("2026-12-01T10:00:00+01:00")
		}), "spec.endDate", "must be after spec.startDate"),
		Entry("a device request with both name and class", onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.Devices = []itmv1.DeviceRequest{{Name: "laptop-0042", Class: itmv1.DeviceClassLaptop}}
		}), "spec.devices[0]", "exactly one of name or class"),
		Entry("an empty device request", onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.Devices = []itmv1.DeviceRequest{{}}
		}), "spec.devices[0]", "exactly one of name or class"),
		Entry("a selector with a device name", onboarding(func(o *itmv1.OnboardingRequest) {
			o.Spec.Devices = []itmv1.DeviceRequest{{Name: "laptop-0042", Selector: &metav1.LabelSelector{}}}
		}), "spec.devices[0].selector", "selector may only be set together with class"),
		Entry("a group name with spaces", onboarding(func(o *itmv1.OnboardingRequest) { o.Spec.Groups = []string{"Eng Team"} }),
			"spec.groups[0]", "should match"),
		Entry("a username longer than 63 characters", onboarding(func(o *itmv1.OnboardingRequest) { o.Name = strings.Repeat("u", 64) }),
			"metadata.name is the username"),
	)
})

var _ = Describe("AccountProvider", func() {
	It("defaults the Kubernetes namespace and token TTL", func() {
		a := kubernetesProvider(nil)
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Expect(a.Spec.Kubernetes.Namespace).To(Equal("itmanager-users"))
		Expect(a.Spec.Kubernetes.TokenTTL).To(Equal(dur(24 * time.Hour)))
	})

	It("defaults the LDAP object classes and offboard action", func() {
		a := kubernetesProvider(func(a *itmv1.AccountProvider) {
			a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
		})
		Expect(k8s.Create(ctx, a)).To(Succeed())
		Expect(a.Spec.LDAP.UserObjectClasses).To(Equal([]string{"inetOrgPerson"}))
		Expect(a.Spec.LDAP.OffboardAction).To(Equal(itmv1.LDAPOffboardDisable))
	})

	DescribeTable("rejects", expectRejected,
		Entry("an unknown type", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Type = "ActiveDirectory" }),
			"spec.type", "Unsupported value"),
		Entry("type Kubernetes without its config", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes = nil }),
			"spec", "type Kubernetes requires spec.kubernetes and forbids spec.ldap"),
		Entry("type Kubernetes with an LDAP config", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.LDAP = ldapSpec() }),
			"type Kubernetes requires spec.kubernetes and forbids spec.ldap"),
		Entry("type LDAP without its config", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Type = itmv1.AccountProviderLDAP }),
			"type LDAP requires spec.ldap and forbids spec.kubernetes"),
		Entry("a kube-* namespace", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.Namespace = "kube-system" }),
			"spec.kubernetes.namespace", "must not be default or a kube-* namespace"),
		Entry("a token TTL under 10 minutes", kubernetesProvider(func(a *itmv1.AccountProvider) { a.Spec.Kubernetes.TokenTTL = dur(5 * time.Minute) }),
			"spec.kubernetes.tokenTTL", "must be at least 10m"),
		Entry("an LDAP URL that is not ldap:// or ldaps://", kubernetesProvider(func(a *itmv1.AccountProvider) {
			a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
			a.Spec.LDAP.URL = "https://ldap.example.com"
		}), "spec.ldap.url", "should match"),
		Entry("an LDAP bind password reference without a key", kubernetesProvider(func(a *itmv1.AccountProvider) {
			a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
			a.Spec.LDAP.BindPasswordSecretRef.Key = ""
		}), "spec.ldap.bindPasswordSecretRef.key"),
		Entry("an unknown LDAP offboard action", kubernetesProvider(func(a *itmv1.AccountProvider) {
			a.Spec.Type, a.Spec.Kubernetes, a.Spec.LDAP = itmv1.AccountProviderLDAP, nil, ldapSpec()
			a.Spec.LDAP.OffboardAction = "Archive"
		}), "spec.ldap.offboardAction", "Unsupported value"),
	)
})

var _ = Describe("MaintenanceWindow", func() {
	It("defaults the rollout and drain settings", func() {
		m := maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.TimeZone = "" })
		Expect(k8s.Create(ctx, m)).To(Succeed())
		Expect(m.Spec.TimeZone).To(Equal("UTC"))
		Expect(m.Spec.Rollout.MaxUnavailable).To(Equal(ptr.To(intstr.FromInt32(1))))
		Expect(m.Spec.Rollout.MaxFailures).To(Equal(ptr.To[int32](1)))
		Expect(m.Spec.Rollout.UpgradeTimeout).To(Equal(dur(time.Hour)))
		Expect(m.Spec.Drain.IgnoreDaemonSets).To(Equal(ptr.To(true)))
	})

	It("accepts percentages from 0% to 100% and fixed blackouts", func() {
		for _, pct := range []string{"0%", "25%", "100%"} {
			Expect(k8s.Create(ctx, maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
				m.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromString(pct))
				m.Spec.Blackouts = []itmv1.Blackout{{Start: ts("2026-12-20T00:00:00Z"), End: ts("2027-01-04T00:00:00Z")}}
			}))).To(Succeed(), pct)
		}
	})

	DescribeTable("rejects", expectRejected,
		Entry("no window", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows = []itmv1.Window{} }),
			"spec.windows", "at least 1 items"),
		Entry("a zero window duration", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Duration.Duration = 0 }),
			"spec.windows[0].duration", "duration must be positive"),
		Entry("a negative window duration", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Windows[0].Duration.Duration = -time.Hour }),
			"spec.windows[0].duration", "should match"),
		Entry("a blackout with only a start", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Start: ts("2026-12-20T00:00:00Z")}}
		}), "spec.blackouts[0]", "either start and end, or schedule and duration"),
		Entry("a blackout with a start, an end and a schedule", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Start: ts("2026-12-20T00:00:00Z"), End: ts("2026-12-21T00:00:00Z"), Schedule: "0 0 * * *"}}
		}), "spec.blackouts[0]", "either start and end, or schedule and duration"),
		Entry("a blackout that ends before it starts", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Start: ts("2026-12-20T00:00:00Z"), End: ts("2026-12-19T00:00:00Z")}}
		}), "spec.blackouts[0].end", "end must be after start"),
		Entry("a recurring blackout with a zero duration", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Blackouts = []itmv1.Blackout{{Schedule: "0 0 * * FRI", Duration: dur(0)}}
		}), "spec.blackouts[0].duration", "duration must be positive"),
		Entry("maxUnavailable above 100%", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromString("150%"))
		}), "spec.rollout.maxUnavailable", "percentage from 0% to 100%"),
		Entry("maxUnavailable 0", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromInt32(0))
		}), "spec.rollout.maxUnavailable", "integer of at least 1"),
		Entry("maxUnavailable that is neither", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.Rollout.MaxUnavailable = ptr.To(intstr.FromString("half"))
		}), "spec.rollout.maxUnavailable"),
		Entry("maxFailures 0", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Rollout.MaxFailures = ptr.To[int32](0) }),
			"spec.rollout.maxFailures", "should be greater than or equal to 1"),
		Entry("a zero upgrade timeout", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Rollout.UpgradeTimeout = dur(0) }),
			"spec.rollout.upgradeTimeout", "must be a positive duration"),
		Entry("a zero drain timeout", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Spec.Drain.Timeout = dur(0) }),
			"spec.drain.timeout", "must be a positive duration"),
		Entry("a node upgrade without an image", maintenanceWindow(func(m *itmv1.MaintenanceWindow) {
			m.Spec.NodeUpgrade = &itmv1.NodeUpgrade{Command: []string{"/upgrade"}}
		}), "spec.nodeUpgrade.image"),
		Entry("a name longer than 50 characters", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Name = strings.Repeat("w", 51) }),
			"metadata.name must be a DNS label of at most 50 characters"),
		Entry("a name with a dot", maintenanceWindow(func(m *itmv1.MaintenanceWindow) { m.Name = "weekly.berlin" }),
			"metadata.name must be a DNS label"),
	)
})
