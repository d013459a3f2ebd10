package access

import (
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
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

func owned(uid string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Labels: map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}, Annotations: map[string]string{accounts.AnnotationOwnerUID: uid}}
}

func TestServiceAccountsBindOnlyWhatCarriesTheRequestsMark(t *testing.T) {
	reqs := requests(request("alice", itmv1.OnboardingPhaseActive), request("bob", itmv1.OnboardingPhaseOffboarded), request("mallory", itmv1.OnboardingPhaseActive))
	reqs["alice"].UID, reqs["bob"].UID, reqs["mallory"].UID = "uid-alice", "uid-bob", "uid-mallory"
	reqs["alice"].Status.Accounts = []itmv1.AccountStatus{
		{Provider: "k8s", ID: "alice", State: itmv1.AccountStateProvisioned},
		{Provider: "ldap", ID: "uid=alice", State: itmv1.AccountStateProvisioned},
	}
	reqs["bob"].Status.Accounts = []itmv1.AccountStatus{{Provider: "k8s", ID: "bob", State: itmv1.AccountStateDisabled}}
	// A forged status: mallory's request claims accounts that are not hers.
	reqs["mallory"].Status.Accounts = []itmv1.AccountStatus{
		{Provider: "k8s", ID: "alice", State: itmv1.AccountStateProvisioned},
		{Provider: "k8s", ID: "ghost", State: itmv1.AccountStateProvisioned},
		{Provider: "k8s", ID: "handmade", State: itmv1.AccountStateProvisioned},
	}
	providers := map[string]*itmv1.AccountProvider{
		"k8s":  {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: "itmanager-users"}}},
		"ldap": {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP}},
	}
	key := func(name string) types.NamespacedName {
		return types.NamespacedName{Namespace: "itmanager-users", Name: name}
	}
	unmarked := owned("uid-mallory")
	delete(unmarked.Labels, itmv1.LabelManagedBy)
	found := map[types.NamespacedName]metav1.ObjectMeta{
		key("alice"): owned("uid-alice"), key("bob"): owned("uid-bob"),
		key("handmade"): unmarked, // right UID, but not created by itmanager
	}
	tests := map[string]struct {
		people []string
		want   []string
	}{
		"the person's own marked ServiceAccount":                                             {[]string{"alice"}, []string{"alice"}},
		"a request no longer Active binds nothing":                                           {[]string{"bob"}, nil},
		"a forged status binds neither another's, a missing, nor an unmarked ServiceAccount": {[]string{"mallory"}, nil},
		"everyone together": {[]string{"alice", "bob", "mallory"}, []string{"alice"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			people := map[string]bool{}
			for _, p := range tc.people {
				people[p] = true
			}
			var got []string
			for _, s := range ServiceAccounts(AccountRefs(people, reqs, providers), found) {
				if s.Namespace != "itmanager-users" || s.Kind != rbacv1.ServiceAccountKind {
					t.Fatalf("subject %+v", s)
				}
				got = append(got, s.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("bound %v, want %v", got, tc.want)
			}
		})
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
	sas := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "itmanager-users", Name: "alice"}}
	protected := Protected{Operator: "itmanager-system", Devices: "itmanager-devices", Upgrades: "itmanager-upgrades", Providers: map[string]string{"itmanager-users": "k8s"}}
	crbs, rbs, problems := Bindings(BindingInput{
		Owner: p, ServiceAccounts: sas, AllowedRoles: []string{"view", "edit"}, ClusterWideRoles: []string{"view"},
		Protected: protected, Namespaces: []string{"default", "shop", "itmanager-system"},
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
	crbs, rbs, _ = Bindings(BindingInput{Owner: p, AllowedRoles: []string{"view", "edit"}, ClusterWideRoles: []string{"view"}})
	if len(crbs)+len(rbs) != 0 {
		t.Fatalf("bound without subjects: %v %v", crbs, rbs)
	}
}

// A role bound "cluster-wide" that is not a cluster-wide role becomes a
// RoleBinding in every namespace but kube-* and itmanager's own.
func TestClusterWideGrantsSpareProtectedNamespaces(t *testing.T) {
	protected := Protected{Operator: "itmanager-system", Devices: "itmanager-devices", Upgrades: "itmanager-upgrades", Providers: map[string]string{"itmanager-users": "k8s"}}
	all := []string{"default", "itmanager-devices", "itmanager-system", "itmanager-upgrades", "itmanager-users", "kube-public", "kube-system", "shop"}
	tests := map[string]struct {
		wide    []string
		wantCRB []string
		wantRB  []string
	}{
		"edit is not cluster-wide": {wide: []string{"view"}, wantCRB: []string{"itm-ops.view"},
			wantRB: []string{"default/itm-ops.edit", "shop/itm-ops.edit"}},
		"no cluster-wide role at all": {wide: []string{}, wantRB: []string{
			"default/itm-ops.edit", "default/itm-ops.view", "shop/itm-ops.edit", "shop/itm-ops.view"}},
		"the installation makes edit cluster-wide": {wide: []string{"view", "edit"}, wantCRB: []string{"itm-ops.edit", "itm-ops.view"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "u-1"}, Spec: itmv1.AccessPolicySpec{
				Subjects:         itmv1.Subjects{Groups: []string{"sre"}},
				KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "view"}, {ClusterRole: "edit"}},
			}}
			crbs, rbs, problems := Bindings(BindingInput{Owner: p, AllowedRoles: []string{"view", "edit"}, ClusterWideRoles: tc.wide, Namespaces: all, Protected: protected})
			var gotCRB, gotRB []string
			for _, b := range crbs {
				gotCRB = append(gotCRB, b.Name)
			}
			for _, b := range rbs {
				gotRB = append(gotRB, b.Namespace+"/"+b.Name)
			}
			if !slices.Equal(gotCRB, tc.wantCRB) || !slices.Equal(gotRB, tc.wantRB) || len(problems) != 0 {
				t.Fatalf("cluster role bindings %v, role bindings %v, problems %v", gotCRB, gotRB, problems)
			}
		})
	}
}

func TestProtected(t *testing.T) {
	providers := map[string]*itmv1.AccountProvider{
		"people": {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: "itmanager-users"}}},
		"ldap":   {Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderLDAP}},
	}
	p := ProtectedFrom("itmanager-system", "itmanager-devices", "itmanager-upgrades", providers)
	tests := map[string]struct {
		why        string
		selectable bool
	}{
		"itmanager-system":   {why: "itmanager-system is the operator's namespace"},
		"itmanager-devices":  {why: "itmanager-devices is the devices' namespace"},
		"itmanager-upgrades": {why: "itmanager-upgrades is the node upgrades' namespace"},
		"itmanager-users":    {why: "itmanager-users is the namespace of AccountProvider people"},
		"kube-system":        {}, // may be named (the admission gate checks the rights), never selected
		"shop":               {selectable: true},
	}
	for ns, tc := range tests {
		t.Run(ns, func(t *testing.T) {
			why := p.Why(ns)
			if (tc.why == "") != (why == "") || !strings.HasPrefix(why, tc.why) {
				t.Fatalf("Why(%q) = %q, want %q…", ns, why, tc.why)
			}
			if got := p.Selectable(ns); got != tc.selectable {
				t.Fatalf("Selectable(%q) = %v", ns, got)
			}
		})
	}
}

func TestDestinationClaimed(t *testing.T) {
	spec := &itmv1.AccessPolicySpec{Destinations: []itmv1.Destination{
		{Namespaces: []string{"shop"}},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}},
	}}
	bad := &itmv1.AccessPolicySpec{Destinations: []itmv1.Destination{
		{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}},
	}}
	tests := map[string]struct {
		spec   *itmv1.AccessPolicySpec
		ns     string
		labels labels.Set
		want   bool
	}{
		"named":                              {spec, "shop", nil, true},
		"matched by the selector":            {spec, "wiki", labels.Set{"team": "a"}, true},
		"neither named nor matched: it left": {spec, "wiki", labels.Set{"team": "b"}, false},
		"a selector that does not parse claims every namespace": {bad, "wiki", nil, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := DestinationClaimed(tc.spec, tc.ns, tc.labels); got != tc.want {
				t.Fatalf("DestinationClaimed = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBindingClaimed(t *testing.T) {
	spec := &itmv1.AccessPolicySpec{KubernetesAccess: []itmv1.KubernetesAccess{
		{ClusterRole: "view"}, {ClusterRole: "edit"}, {ClusterRole: "admin", Namespaces: []string{"shop"}},
	}}
	wide := []string{"view"}
	tests := map[string]struct {
		role, ns string
		want     bool
	}{
		"a cluster-wide role's ClusterRoleBinding":     {"view", "", true},
		"a cluster-wide role has no RoleBindings":      {"view", "shop", false},
		"a spread role's RoleBinding in any namespace": {"edit", "itmanager-users", true},
		"a spread role has no ClusterRoleBinding":      {"edit", "", false},
		"a namespaced entry's RoleBinding":             {"admin", "shop", true},
		"a namespaced entry elsewhere":                 {"admin", "wiki", false},
		"a role the spec no longer names":              {"cluster-admin", "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := BindingClaimed(spec, wide, tc.role, tc.ns); got != tc.want {
				t.Fatalf("BindingClaimed(%q, %q) = %v, want %v", tc.role, tc.ns, got, tc.want)
			}
		})
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
