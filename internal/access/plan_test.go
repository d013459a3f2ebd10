package access

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/netpol"
	"github.com/itmanager-io/itmanager/internal/posture"
)

var protectedSet = Protected{Operator: "itmanager-system", Devices: "itmanager-devices", Upgrades: "itmanager-upgrades",
	Providers: map[string]string{"itmanager-users": "k8s"}}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func terminating(name string, labels map[string]string) *corev1.Namespace {
	ns := namespace(name, labels)
	ns.Status.Phase = corev1.NamespaceTerminating
	return ns
}

// deleting is a namespace being deleted whose phase still says Active.
func deleting(name string, labels map[string]string) *corev1.Namespace {
	ns := namespace(name, labels)
	ns.DeletionTimestamp = &metav1.Time{Time: now}
	ns.Status.Phase = corev1.NamespaceActive
	return ns
}

func nsMap(nss ...*corev1.Namespace) map[string]*corev1.Namespace {
	m := map[string]*corev1.Namespace{}
	for _, ns := range nss {
		m[ns.Name] = ns
	}
	return m
}

func TestParseSelectorsNamesTheFieldThatDoesNotParse(t *testing.T) {
	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}
	tests := map[string]struct {
		spec itmv1.AccessPolicySpec
		want string
	}{
		"valid":                    {itmv1.AccessPolicySpec{Destinations: []itmv1.Destination{{Namespaces: []string{"a"}}, {NamespaceSelector: &metav1.LabelSelector{}}}}, ""},
		"device selector":          {itmv1.AccessPolicySpec{Subjects: itmv1.Subjects{DeviceSelector: bad}, Destinations: []itmv1.Destination{{NamespaceSelector: bad}}}, "spec.subjects.deviceSelector"},
		"second namespaceSelector": {itmv1.AccessPolicySpec{Destinations: []itmv1.Destination{{NamespaceSelector: &metav1.LabelSelector{}}, {NamespaceSelector: bad}}}, "spec.destinations[1].namespaceSelector"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := ParseSelectors(&tc.spec)
			if tc.want == "" {
				if err != nil || len(s.Namespaces) != len(tc.spec.Destinations) || s.Namespaces[0] != nil || s.Namespaces[1] == nil {
					t.Fatalf("ParseSelectors = %+v, %v", s, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
				t.Fatalf("error %v, want one starting with %s", err, tc.want)
			}
		})
	}
}

// The named-versus-selected rule: naming reaches any existing namespace
// (kube-* too) but a protected one, which is a problem; a selector never
// reaches kube-* nor a protected one, silently.
func TestTargetsNamedVersusSelected(t *testing.T) {
	team := map[string]string{"team": "a"}
	all := nsMap(namespace("shop", team), namespace("wiki", nil), namespace("kube-system", team), namespace("itmanager-system", team),
		namespace("itmanager-users", team), terminating("old", team), deleting("closing", team), namespace("kube-public", nil))
	sel := &metav1.LabelSelector{MatchLabels: team}
	tests := map[string]struct {
		dests    []itmv1.Destination
		want     []string // namespace: number of destinations
		problems []string
	}{
		"named existing, kube-* included":                                     {[]itmv1.Destination{{Namespaces: []string{"wiki", "kube-public"}}}, []string{"kube-public:1", "wiki:1"}, nil},
		"named absent, terminating or being deleted: nothing yet, no problem": {[]itmv1.Destination{{Namespaces: []string{"later", "old", "closing"}}}, nil, nil},
		"named protected: a problem per name": {[]itmv1.Destination{{Namespaces: []string{"wiki"}}, {Namespaces: []string{"itmanager-system", "itmanager-users"}}}, []string{"wiki:1"}, []string{
			"spec.destinations[1].namespaces: itmanager-system is the operator's namespace and is never a destination",
			"spec.destinations[1].namespaces: itmanager-users is the namespace of AccountProvider k8s and is never a destination",
		}},
		"selected: never kube-*, protected, terminating or being deleted, and no problem": {[]itmv1.Destination{{NamespaceSelector: sel}}, []string{"shop:1"}, nil},
		"named and selected: both destinations, in order":                                 {[]itmv1.Destination{{NamespaceSelector: sel}, {Namespaces: []string{"shop"}}}, []string{"shop:2"}, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			spec := &itmv1.AccessPolicySpec{Destinations: tc.dests}
			sels, err := ParseSelectors(spec)
			if err != nil {
				t.Fatal(err)
			}
			targets, problems := Targets(spec, sels, protectedSet, all)
			var got []string
			for _, tg := range targets {
				got = append(got, tg.Namespace+":"+string(rune('0'+len(tg.Destinations))))
				if len(tg.Destinations) == 2 && tg.Destinations[0].NamespaceSelector == nil {
					t.Errorf("destinations of %s out of spec order", tg.Namespace)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) || !slices.Equal(problems, tc.problems) {
				t.Fatalf("targets %v, problems %q; want %v, %q", got, problems, tc.want, tc.problems)
			}
		})
	}
}

// A destination whose selector was not parsed reaches nothing: not every
// namespace, nor the names beside it (which the schema forbids anyway).
func TestTargetsOfAnUnparsedSelectorAreNone(t *testing.T) {
	spec := &itmv1.AccessPolicySpec{Destinations: []itmv1.Destination{{NamespaceSelector: &metav1.LabelSelector{}, Namespaces: []string{"wiki"}}}}
	targets, problems := Targets(spec, Selectors{}, protectedSet, nsMap(namespace("wiki", nil), namespace("shop", nil)))
	if len(targets) != 0 || len(problems) != 0 {
		t.Fatalf("targets %+v, problems %q; want none", targets, problems)
	}
}

func TestSpreadsOverNamespaces(t *testing.T) {
	wide := []string{"view"}
	tests := map[string]struct {
		ka   []itmv1.KubernetesAccess
		want bool
	}{
		"none":                          {nil, false},
		"cluster-wide role":             {[]itmv1.KubernetesAccess{{ClusterRole: "view"}}, false},
		"namespaced":                    {[]itmv1.KubernetesAccess{{ClusterRole: "edit", Namespaces: []string{"a"}}}, false},
		"other role without namespaces": {[]itmv1.KubernetesAccess{{ClusterRole: "view"}, {ClusterRole: "edit"}}, true},
	}
	for name, tc := range tests {
		if got := SpreadsOverNamespaces(&itmv1.AccessPolicySpec{KubernetesAccess: tc.ka}, wide); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

// Compute runs the whole pipeline on one snapshot: who (requests, devices,
// check-ins), where (namespaces, protected ones), and which identities
// (ServiceAccounts carrying the request's mark).
func TestComputeResolvesCompilesAndBindsFromTheSnapshotAlone(t *testing.T) {
	p := &itmv1.AccessPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "p-1"},
		Spec: itmv1.AccessPolicySpec{
			Subjects: itmv1.Subjects{Groups: []string{"sre"}},
			Posture:  &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: 15 * time.Minute}},
			Destinations: []itmv1.Destination{
				{Namespaces: []string{"shop", "itmanager-devices", "closing"}, Ports: []itmv1.Port{{Port: 443}}},
			},
			KubernetesAccess: []itmv1.KubernetesAccess{
				{ClusterRole: "view"},
				{ClusterRole: "edit", Namespaces: []string{"shop", "itmanager-users", "later", "closing"}},
				{ClusterRole: "admin"},
			},
		},
	}
	alice := request("alice", itmv1.OnboardingPhaseActive, "sre")
	alice.UID = "r-alice"
	alice.Status.Accounts = []itmv1.AccountStatus{{Provider: "k8s", ID: "alice", State: itmv1.AccountStateProvisioned}}
	bob := request("bob", itmv1.OnboardingPhaseActive, "sre")
	bob.UID = "r-bob"
	bob.Status.Accounts = []itmv1.AccountStatus{{Provider: "k8s", ID: "bob", State: itmv1.AccountStateProvisioned}}
	recent, old := now.Add(-time.Minute), now.Add(-time.Hour)
	sels, err := ParseSelectors(&p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	snap := Snapshot{
		Policy: p, Selectors: sels,
		Requests: requests(alice, bob),
		Candidates: []Candidate{
			{Device: dev("a1", "alice", "10.0.0.1"), LastCheckIn: &recent},
			{Device: dev("b1", "bob", "10.0.0.2"), LastCheckIn: &old},
			{Device: dev("x1", "xavier", "10.0.0.3"), LastCheckIn: &recent}, // nobody's subject
		},
		Providers: map[string]*itmv1.AccountProvider{"k8s": {ObjectMeta: metav1.ObjectMeta{Name: "k8s"},
			Spec: itmv1.AccountProviderSpec{Type: itmv1.AccountProviderKubernetes, Kubernetes: &itmv1.KubernetesProviderSpec{Namespace: "itmanager-users"}}}},
		Namespaces: nsMap(namespace("shop", nil), namespace("itmanager-devices", nil), namespace("itmanager-users", nil), deleting("closing", nil)),
		// alice's ServiceAccount carries her request's mark; bob's a forged one.
		ServiceAccounts: map[types.NamespacedName]metav1.ObjectMeta{
			{Namespace: "itmanager-users", Name: "alice"}: {Labels: map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}, Annotations: map[string]string{accounts.AnnotationOwnerUID: "r-alice"}},
			{Namespace: "itmanager-users", Name: "bob"}:   {Labels: map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}, Annotations: map[string]string{accounts.AnnotationOwnerUID: "someone"}},
		},
	}
	plan := Compute(snap, Config{OperatorNamespace: "itmanager-system", DevicesNamespace: "itmanager-devices", UpgradesNamespace: "itmanager-upgrades",
		BindableRoles: []string{"view", "edit"}, ClusterWideRoles: []string{"view"}}, now)

	if plan.Counts != (itmv1.DeviceCounts{Matched: 2, Allowed: 1, Denied: 1}) || !plan.NextChange.Equal(recent.Add(15*time.Minute)) {
		t.Fatalf("counts %+v, next change %v", plan.Counts, plan.NextChange)
	}
	if len(plan.NetworkPolicies) != 1 || plan.NetworkPolicies[0].Namespace != "shop" || plan.NetworkPolicies[0].Name != "itm-ops" ||
		plan.NetworkPolicies[0].Spec.Ingress[0].From[0].IPBlock.CIDR != "10.0.0.1/32" {
		t.Fatalf("network policies %+v (none in the namespace being deleted)", plan.NetworkPolicies)
	}
	want := []rbacv1.Subject{{Kind: "Group", APIGroup: rbacv1.GroupName, Name: "itmanager:sre"}, {Kind: "ServiceAccount", Namespace: "itmanager-users", Name: "alice"}}
	if len(plan.ClusterRoleBindings) != 1 || plan.ClusterRoleBindings[0].Name != "itm-ops.view" || !slices.Equal(plan.ClusterRoleBindings[0].Subjects, want) {
		t.Fatalf("cluster role bindings %+v", plan.ClusterRoleBindings)
	}
	if len(plan.RoleBindings) != 1 || plan.RoleBindings[0].Namespace != "shop" || plan.RoleBindings[0].Name != "itm-ops.edit" {
		t.Fatalf("role bindings %+v (the absent namespace gets one when it appears; the one being deleted none)", plan.RoleBindings)
	}
	if len(plan.Forbidden) != 1 || !strings.Contains(plan.Forbidden[0], "spec.destinations[0].namespaces: itmanager-devices is the devices' namespace") {
		t.Fatalf("forbidden %q", plan.Forbidden)
	}
	if len(plan.Refused) != 2 || !strings.Contains(plan.Refused[0], "spec.kubernetesAccess[1].namespaces: itmanager-users") ||
		!strings.Contains(plan.Refused[1], `spec.kubernetesAccess[2].clusterRole: "admin"`) {
		t.Fatalf("refused %q", plan.Refused)
	}
}

func TestWithdrawalKeepsWhatTheSpecStillNamesAndLetsTheRestGo(t *testing.T) {
	p := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "p-1"}, Spec: itmv1.AccessPolicySpec{
		Destinations:     []itmv1.Destination{{Namespaces: []string{"named"}}, {NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}},
		KubernetesAccess: []itmv1.KubernetesAccess{{ClusterRole: "edit", Namespaces: []string{"named", "closing"}}, {ClusterRole: "view"}},
	}}
	nss := nsMap(namespace("named", nil), namespace("labelled", map[string]string{"team": "a"}), namespace("other", nil), terminating("dying", map[string]string{"team": "a"}),
		deleting("closing", map[string]string{"team": "a"}))
	w := Withdrawal{Policy: p, ClusterWideRoles: []string{"view"}, Namespaces: nss}
	npIn := func(ns string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "itm-ops"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}}
	}
	rbIn := func(ns, role string) *rbacv1.RoleBinding {
		return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "itm-ops." + role},
			RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: role}, Subjects: []rbacv1.Subject{{Kind: "Group", Name: "g"}}}
	}
	crb := func(role string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "itm-ops." + role},
			RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: role}, Subjects: []rbacv1.Subject{{Kind: "Group", Name: "g"}}}
	}
	// toRole makes o reference a Role of the same name: no policy grants one.
	toRole := func(o *rbacv1.RoleRef) { o.Kind = "Role" }
	for _, tc := range []struct {
		name        string
		got         func(Withdrawal) (metav1.Object, bool)
		keep, keep2 bool // as decided; and with All (invalid spec)
	}{
		{"NetworkPolicy in a named namespace", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("named")) }, true, true},
		{"NetworkPolicy in a selected namespace", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("labelled")) }, true, true},
		{"NetworkPolicy elsewhere", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("other")) }, false, true},
		{"a NetworkPolicy selecting the pods a wanted one selects there (a surplus shard)", func(w Withdrawal) (metav1.Object, bool) {
			surplus := npIn("named")
			surplus.Name = "itm-ops.1"
			w.Wanted = []*networkingv1.NetworkPolicy{npIn("labelled"), npIn("named")}
			return w.NetworkPolicy(surplus)
		}, false, true},
		{"a NetworkPolicy selecting other pods than the wanted ones there", func(w Withdrawal) (metav1.Object, bool) {
			wanted := npIn("named")
			wanted.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "y"}}
			w.Wanted = []*networkingv1.NetworkPolicy{wanted}
			return w.NetworkPolicy(npIn("named"))
		}, true, true},
		{"NetworkPolicy in a terminating namespace", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("dying")) }, false, true},
		{"NetworkPolicy in a namespace being deleted", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("closing")) }, false, true},
		{"NetworkPolicy in a gone namespace", func(w Withdrawal) (metav1.Object, bool) { return w.NetworkPolicy(npIn("gone")) }, false, true},
		{"RoleBinding of a granted role", func(w Withdrawal) (metav1.Object, bool) { return w.RoleBinding(rbIn("named", "edit")) }, true, true},
		{"RoleBinding of another role", func(w Withdrawal) (metav1.Object, bool) { return w.RoleBinding(rbIn("named", "admin")) }, false, true},
		{"RoleBinding of a Role named like a granted ClusterRole", func(w Withdrawal) (metav1.Object, bool) {
			rb := rbIn("named", "edit")
			toRole(&rb.RoleRef)
			return w.RoleBinding(rb)
		}, false, true},
		{"RoleBinding in a namespace being deleted", func(w Withdrawal) (metav1.Object, bool) { return w.RoleBinding(rbIn("closing", "edit")) }, false, true},
		{"RoleBinding in a gone namespace", func(w Withdrawal) (metav1.Object, bool) { return w.RoleBinding(rbIn("gone", "edit")) }, false, true},
		{"ClusterRoleBinding of a cluster-wide grant", func(w Withdrawal) (metav1.Object, bool) { return w.ClusterRoleBinding(crb("view")) }, true, true},
		{"ClusterRoleBinding of a Role named like a cluster-wide grant", func(w Withdrawal) (metav1.Object, bool) {
			b := crb("view")
			toRole(&b.RoleRef)
			return w.ClusterRoleBinding(b)
		}, false, true},
		{"ClusterRoleBinding of a role no longer granted", func(w Withdrawal) (metav1.Object, bool) { return w.ClusterRoleBinding(crb("edit")) }, false, true},
	} {
		for _, all := range []bool{false, true} {
			w.All = all
			o, keep := tc.got(w)
			want := tc.keep
			if all {
				want = tc.keep2
			}
			if keep != want {
				t.Errorf("%s (all=%v): keep %v, want %v", tc.name, all, keep, want)
				continue
			}
			if !keep {
				continue
			}
			// Withdrawn: marked as ours, granting nothing.
			if o.GetLabels()[netpol.LabelAccessPolicy] != "ops" || len(o.GetOwnerReferences()) != 1 || o.GetOwnerReferences()[0].UID != "p-1" {
				t.Errorf("%s: marks %v %v", tc.name, o.GetLabels(), o.GetOwnerReferences())
			}
			switch o := o.(type) {
			case *networkingv1.NetworkPolicy:
				if len(o.Spec.Ingress) != 0 || o.Spec.PodSelector.MatchLabels["app"] != "x" {
					t.Errorf("%s: not isolating the same pods: %+v", tc.name, o.Spec)
				}
			case *rbacv1.RoleBinding:
				if len(o.Subjects) != 0 || o.RoleRef.Name == "" {
					t.Errorf("%s: binds %v", tc.name, o.Subjects)
				}
			case *rbacv1.ClusterRoleBinding:
				if len(o.Subjects) != 0 || o.RoleRef.Name == "" {
					t.Errorf("%s: binds %v", tc.name, o.Subjects)
				}
			}
		}
	}
}

// Ready keeps the reasons and their precedence, says Stalled for what only
// a person can fix (an invalid spec, a forbidden destination, a refused
// role, a name someone else holds) and Reconciling only while a write is
// being retried.
func TestReadySummary(t *testing.T) {
	counts := itmv1.DeviceCounts{Matched: 3, Allowed: 2, Denied: 1}
	tests := map[string]struct {
		in       Outcome
		want     kit.Summary
		observed bool
	}{
		"invalid spec stalls": {Outcome{Invalid: errors.New("spec.subjects.deviceSelector: bad"), ApplyErr: errors.New("x"), Forbidden: []string{"f"}},
			kit.Summary{Reason: itmv1.ReasonInvalidSpec, Message: "spec.subjects.deviceSelector: bad", Stalled: true}, true},
		"a failed write is retried: reconciling, generation not observed": {Outcome{ApplyErr: errors.New("update NetworkPolicy a/b: boom"), Forbidden: []string{"f"}, Counts: counts},
			kit.Summary{Reason: itmv1.ReasonApplyFailed, Message: "update NetworkPolicy a/b: boom", Reconciling: true}, false},
		"forbidden first, every problem listed": {Outcome{Forbidden: []string{"f"}, Refused: []string{"r"}, Taken: []string{"t"}, Counts: counts},
			kit.Summary{Reason: itmv1.ReasonForbiddenDestination, Message: "f; r; t", Stalled: true}, true},
		"refused role": {Outcome{Refused: []string{"r"}, Taken: []string{"t"}}, kit.Summary{Reason: itmv1.ReasonRoleNotAllowed, Message: "r; t", Stalled: true}, true},
		"name taken":   {Outcome{Taken: []string{"t1", "t2"}}, kit.Summary{Reason: itmv1.ReasonNameTaken, Message: "t1; t2", Stalled: true}, true},
		"audit, even with no allowed device": {Outcome{Audit: true, Counts: itmv1.DeviceCounts{Matched: 1}},
			kit.Summary{Ready: true, Reason: itmv1.ReasonAudited, Message: "audit only: 0 of 1 devices would be allowed; nothing is written"}, true},
		"problems beat audit": {Outcome{Audit: true, Refused: []string{"r"}}, kit.Summary{Reason: itmv1.ReasonRoleNotAllowed, Message: "r", Stalled: true}, true},
		"nobody allowed: isolated, which is Ready": {Outcome{Counts: itmv1.DeviceCounts{Matched: 2, Denied: 2}},
			kit.Summary{Ready: true, Reason: itmv1.ReasonNoAllowedDevices, Message: "no device qualifies: the selected pods are isolated from device addresses"}, true},
		"enforced": {Outcome{Counts: counts}, kit.Summary{Ready: true, Reason: itmv1.ReasonEnforced, Message: "2 of 3 devices allowed"}, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, observed := Ready(tc.in)
			if got != tc.want || observed != tc.observed {
				t.Fatalf("Ready = %+v, observed %v; want %+v, %v", got, observed, tc.want, tc.observed)
			}
		})
	}
}

// The Lease watch decides whether a renewal flips a policy's verdict with
// CheckInFlips; posture decides the verdict itself. They must agree at
// every boundary, or a renewal that brings a device back is dropped (or
// one that changes nothing costs a reconcile).
func TestWatchFreshnessAgreesWithPosture(t *testing.T) {
	const maxAge = 15 * time.Minute
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	cases := map[string]*time.Time{
		"never":              nil,
		"just now":           at(0),
		"within":             at(-maxAge + time.Nanosecond),
		"exactly maxAge old": at(-maxAge),
		"older":              at(-maxAge - time.Second),
		"ahead within skew":  at(device.MaxClockSkew),
		"ahead beyond skew":  at(device.MaxClockSkew + time.Nanosecond),
	}
	d := dev("d", "")
	for name, last := range cases {
		t.Run(name, func(t *testing.T) {
			r := posture.Evaluate(posture.Input{Device: d, Posture: &itmv1.Posture{MaxCheckInAge: &metav1.Duration{Duration: maxAge}}, LastCheckIn: last, Now: now})
			if got := device.Fresh(last, maxAge, now); got != r.Allowed() {
				t.Fatalf("watch filter says fresh=%v, posture allowed=%v (%v)", got, r.Allowed(), r.Reasons())
			}
			// A renewal from this check-in to a fresh one flips exactly when
			// posture denied it before.
			if flips := CheckInFlips(last, at(0), maxAge, now); flips == r.Allowed() {
				t.Fatalf("CheckInFlips to a fresh check-in = %v, posture allowed before = %v", flips, r.Allowed())
			}
		})
	}
}

func TestInPlaceKeepsOnlyWantedNetworkPoliciesThePolicyAlreadyControls(t *testing.T) {
	p := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "p-1"}}
	other := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ops", UID: "p-2"}}
	np := func(ns, name string, owner *itmv1.AccessPolicy) *networkingv1.NetworkPolicy {
		o := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if owner != nil {
			o.OwnerReferences = []metav1.OwnerReference{netpol.OwnerReference(owner)}
		}
		return o
	}
	want := []*networkingv1.NetworkPolicy{np("a", "itm-ops", p), np("a", "itm-ops.1", p), np("b", "itm-ops", p), np("c", "itm-ops", p)}
	have := []*networkingv1.NetworkPolicy{
		np("a", "itm-ops", p),     // in place
		np("a", "itm-ops.2", p),   // not wanted
		np("b", "itm-ops", other), // same name, another policy's (a UID since deleted and recreated)
		np("c", "itm-ops", nil),   // same name, no controller
		np("d", "itm-ops", p),     // not wanted
	}
	var got []string
	for _, o := range InPlace(p, want, have) {
		got = append(got, o.Namespace+"/"+o.Name)
	}
	if !slices.Equal(got, []string{"a/itm-ops"}) {
		t.Errorf("InPlace = %v, want [a/itm-ops]: a.1 does not exist yet, b's and c's are not controlled by the policy", got)
	}
}
