package access

import (
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var now = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func request(name string, phase itmv1.OnboardingPhase, groups ...string) *itmv1.OnboardingRequest {
	return &itmv1.OnboardingRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       itmv1.OnboardingRequestSpec{Groups: groups},
		Status:     itmv1.OnboardingRequestStatus{Phase: phase},
	}
}

func requests(rs ...*itmv1.OnboardingRequest) map[string]*itmv1.OnboardingRequest {
	m := map[string]*itmv1.OnboardingRequest{}
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

func keys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestPeople(t *testing.T) {
	offboarding := request("olga", itmv1.OnboardingPhaseActive, "eng")
	offboarding.Spec.Offboard = true
	reqs := requests(
		request("alice", itmv1.OnboardingPhaseActive, "eng", "ops"),
		request("bob", itmv1.OnboardingPhaseActive, "sales"),
		request("carol", itmv1.OnboardingPhaseScheduled, "eng"),
		request("dave", itmv1.OnboardingPhaseOffboarded, "eng"),
		offboarding,
	)
	tests := map[string]struct {
		s    itmv1.Subjects
		want []string
	}{
		"group members that are Active":              {itmv1.Subjects{Groups: []string{"eng"}}, []string{"alice"}},
		"several groups":                             {itmv1.Subjects{Groups: []string{"eng", "sales"}}, []string{"alice", "bob"}},
		"listed users with a request must be Active": {itmv1.Subjects{Users: []string{"bob", "carol", "dave"}}, []string{"bob"}},
		"a listed user without a request counts":     {itmv1.Subjects{Users: []string{"erin"}}, []string{"erin"}},
		"union":                                      {itmv1.Subjects{Users: []string{"bob"}, Groups: []string{"ops"}}, []string{"alice", "bob"}},
		"device selector names no people":            {itmv1.Subjects{DeviceSelector: &metav1.LabelSelector{}}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := keys(People(tc.s, reqs)); !slices.Equal(got, tc.want) {
				t.Fatalf("People = %v, want %v", got, tc.want)
			}
		})
	}
}

func dev(name, assignee string, addrs ...string) *itmv1.Device {
	return &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"fleet": "kiosk"}},
		Spec:       itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: assignee, Addresses: addrs, Lifecycle: itmv1.DeviceLifecycleActive},
	}
}

func TestResolve(t *testing.T) {
	checkIn := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	policy := &itmv1.AccessPolicy{Spec: itmv1.AccessPolicySpec{Posture: &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: 15 * time.Minute}}}}
	lost := dev("d-lost", "alice", "10.0.0.9")
	lost.Spec.Lifecycle = itmv1.DeviceLifecycleLost
	observed := dev("d-observed", "alice")
	observed.Status.Observed = &itmv1.ObservedFacts{Addresses: []string{"10.0.0.3", "10.0.0.2"}}
	cands := []Candidate{
		{Device: dev("d-fresh", "alice", "10.0.0.1"), LastCheckIn: checkIn(time.Minute)},
		{Device: observed, LastCheckIn: checkIn(10 * time.Minute)},
		{Device: dev("d-stale", "alice", "10.0.0.4"), LastCheckIn: checkIn(time.Hour)},
		{Device: lost, LastCheckIn: checkIn(time.Minute)},
		{Device: dev("d-conflict", "alice", "10.0.0.5"), LastCheckIn: checkIn(time.Minute), Conflicts: map[string][]string{"10.0.0.5": {"other"}}},
		{Device: dev("d-noaddr", "alice"), LastCheckIn: checkIn(time.Minute)},
		{Device: dev("d-someone-else", "bob", "10.0.0.6"), LastCheckIn: checkIn(time.Minute)},
	}
	r := Resolve(Input{Policy: policy, People: map[string]bool{"alice": true}, Candidates: cands, Now: now})

	if r.Counts != (itmv1.DeviceCounts{Matched: 6, Allowed: 2, Denied: 4}) {
		t.Errorf("counts %+v", r.Counts)
	}
	var prefixes []string
	for _, p := range r.Prefixes {
		prefixes = append(prefixes, p.String())
	}
	if want := []string{"10.0.0.1/32", "10.0.0.2/31"}; !slices.Equal(prefixes, want) {
		t.Errorf("prefixes %v, want %v", prefixes, want)
	}
	if want := now.Add(5 * time.Minute); !r.NextChange.Equal(want) {
		t.Errorf("NextChange %v, want %v (the observed device's check-in expires first)", r.NextChange, want)
	}
	var denied []string
	for _, d := range r.Denied {
		denied = append(denied, d.Device+": "+strings.Join(d.Reasons, "; "))
	}
	want := []string{
		"d-conflict: address 10.0.0.5 is also claimed by other; no usable address",
		"d-lost: device is Lost",
		"d-noaddr: no address known",
		"d-stale: last check-in 2026-11-21T09:00:00Z is older than 15m0s",
	}
	if !slices.Equal(denied, want) {
		t.Errorf("denied\n%q\nwant\n%q", denied, want)
	}

	// The device selector adds devices whoever holds them.
	sel, err := Selector(itmv1.Subjects{DeviceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fleet": "kiosk"}}})
	if err != nil {
		t.Fatal(err)
	}
	r = Resolve(Input{Policy: policy, People: map[string]bool{}, Selector: sel, Candidates: cands, Now: now})
	if r.Counts.Matched != 7 || r.Counts.Allowed != 3 {
		t.Errorf("selector counts %+v", r.Counts)
	}
}

func TestResolveBoundsDenied(t *testing.T) {
	var cands []Candidate
	for i := range 30 {
		cands = append(cands, Candidate{Device: dev("d-"+string(rune('a'+i)), "alice")})
	}
	r := Resolve(Input{Policy: &itmv1.AccessPolicy{}, People: map[string]bool{"alice": true}, Candidates: cands, Now: now})
	if r.Counts.Denied != 30 || len(r.Denied) != MaxDeniedInStatus || r.Denied[0].Device != "d-a" {
		t.Fatalf("denied %d, listed %d, first %s", r.Counts.Denied, len(r.Denied), r.Denied[0].Device)
	}
	if len(r.Prefixes) != 0 {
		t.Fatalf("no device allowed, yet prefixes %v", r.Prefixes)
	}
}

func TestSelectorError(t *testing.T) {
	_, err := Selector(itmv1.Subjects{DeviceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}})
	if err == nil || !strings.Contains(err.Error(), "spec.subjects.deviceSelector") {
		t.Fatalf("err = %v", err)
	}
}

func TestBindings(t *testing.T) {
	p := &itmv1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "u-1"},
		Spec: itmv1.AccessPolicySpec{
			Subjects: itmv1.Subjects{Groups: []string{"sre"}, Users: []string{"alice"}},
			KubernetesAccess: []itmv1.KubernetesAccess{
				{ClusterRole: "view"},
				{ClusterRole: "edit", Namespaces: []string{"shop", "itmanager-system", "not-yet"}},
				{ClusterRole: "cluster-admin"},
			},
		},
	}
	reqs := requests(request("alice", itmv1.OnboardingPhaseActive), request("bob", itmv1.OnboardingPhaseOffboarded))
	reqs["alice"].Status.Accounts = []itmv1.AccountStatus{
		{Provider: "k8s", ID: "alice", State: itmv1.AccountStateProvisioned},
		{Provider: "ldap", ID: "uid=alice", State: itmv1.AccountStateProvisioned},
	}
	reqs["bob"].Status.Accounts = []itmv1.AccountStatus{{Provider: "k8s", ID: "bob", State: itmv1.AccountStateDisabled}}
	providers := map[string]*itmv1.AccountProvider{
		"k8s":  {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: "itmanager-users"}}},
		"ldap": {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP}},
	}
	sas := ServiceAccounts(map[string]bool{"alice": true, "bob": true}, reqs, providers)
	if len(sas) != 1 || sas[0].Name != "alice" || sas[0].Namespace != "itmanager-users" {
		t.Fatalf("service accounts %+v", sas)
	}
	crbs, rbs, problems := Bindings(BindingInput{
		Owner: p, ServiceAccounts: sas, AllowedRoles: []string{"view", "edit"},
		Forbidden: func(ns string) string {
			if ns == "itmanager-system" {
				return "itmanager-system is the operator's namespace"
			}
			return ""
		},
		Exists: func(ns string) bool { return ns != "not-yet" },
	})
	if len(crbs) != 1 || crbs[0].Name != "itm-ops.view" || crbs[0].RoleRef.Name != "view" {
		t.Fatalf("cluster role bindings %+v", crbs)
	}
	wantSubjects := []rbacv1.Subject{
		{Kind: "Group", APIGroup: rbacv1.GroupName, Name: "itmanager:sre"},
		{Kind: "ServiceAccount", Namespace: "itmanager-users", Name: "alice"},
	}
	if !slices.Equal(crbs[0].Subjects, wantSubjects) {
		t.Fatalf("subjects %+v", crbs[0].Subjects)
	}
	if len(rbs) != 1 || rbs[0].Namespace != "shop" || rbs[0].Name != "itm-ops.edit" {
		t.Fatalf("role bindings %+v", rbs)
	}
	if len(problems) != 2 || !strings.Contains(problems[0], "itmanager-system") || !strings.Contains(problems[1], `spec.kubernetesAccess[2].clusterRole: "cluster-admin"`) {
		t.Fatalf("problems %q", problems)
	}

	// Devices only: no identity, nothing bound.
	p.Spec.Subjects = itmv1.Subjects{DeviceSelector: &metav1.LabelSelector{}}
	crbs, rbs, _ = Bindings(BindingInput{Owner: p, AllowedRoles: []string{"view", "edit"}, Forbidden: func(string) string { return "" }})
	if len(crbs)+len(rbs) != 0 {
		t.Fatalf("bound without subjects: %v %v", crbs, rbs)
	}
}

func TestBindingName(t *testing.T) {
	if got := BindingName("p", "view"); got != "itm-p.view" {
		t.Fatal(got)
	}
	long := BindingName("p", strings.Repeat("r", 300))
	if len(long) != 253 || long == BindingName("p", strings.Repeat("r", 299)) {
		t.Fatalf("long name %d characters", len(long))
	}
}
