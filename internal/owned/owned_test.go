package owned

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// The Set is tested against controller-runtime's fake client, which keeps
// resourceVersions and enforces optimistic locking and UID preconditions as
// the API server does; the controller specs run it against the real one.

const ownerLabel = "itmanager.io/access-policy"

var ctx = context.Background()

// owner is a policy named "ap" (as in every generated name here) of a UID.
func owner(uid string) *itmv1.AccessPolicy {
	return &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "ap", UID: types.UID(uid)}}
}

func ref(o *itmv1.AccessPolicy) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: itmv1.GroupVersion.String(), Kind: "AccessPolicy", Name: o.Name, UID: o.UID, Controller: ptr.To(true)}
}

func marks(o *itmv1.AccessPolicy) map[string]string {
	return map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue, ownerLabel: o.Name}
}

func np(o *itmv1.AccessPolicy, ns, name string, cidrs ...string) *networkingv1.NetworkPolicy {
	var from []networkingv1.NetworkPolicyPeer
	for _, c := range cidrs {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: marks(o), OwnerReferences: []metav1.OwnerReference{ref(o)}},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
	if len(from) > 0 {
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: from}}
	}
	return p
}

// writes counts the create, update and delete requests the Set sends.
type writes struct{ create, update, del int }

func newSet(t *testing.T, w *writes, objs ...client.Object) (*Set[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList], client.Client) {
	t.Helper()
	return newSetMeddled(t, w, nil, objs...)
}

// newSetMeddled is newSet whose first update meets meddle instead of the
// store: what someone else did just before it (meddle's error is the
// answer the update gets).
func newSetMeddled(t *testing.T, w *writes, meddle func(client.WithWatch) error, objs ...client.Object) (*Set[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList], client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			w.create++
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			w.update++
			if m := meddle; m != nil {
				meddle = nil
				return m(c)
			}
			return c.Update(ctx, o, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			w.del++
			return c.Delete(ctx, o, opts...)
		},
	}).Build()
	return New(NetworkPolicies, Config{
		Client: c, APIReader: c, FieldManager: "test", OwnerLabel: ownerLabel,
		Owner: schema.GroupKind{Group: itmv1.GroupVersion.Group, Kind: "AccessPolicy"}, OwnerNoun: "policy",
	}), c
}

// get reads the policy's NetworkPolicy itm-ap in ns.
func get(t *testing.T, c client.Client, ns string) *networkingv1.NetworkPolicy {
	t.Helper()
	out := &networkingv1.NetworkPolicy{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "itm-ap"}, out); err != nil {
		t.Fatalf("get %s/itm-ap: %v", ns, err)
	}
	return out
}

func cidrs(p *networkingv1.NetworkPolicy) []string {
	var out []string
	for _, r := range p.Spec.Ingress {
		for _, f := range r.From {
			out = append(out, f.IPBlock.CIDR)
		}
	}
	return out
}

func TestApplyCreatesWhatIsAbsentAndUpdatesOnlyWhatDiffers(t *testing.T) {
	p := owner("u1")
	same := np(p, "a", "itm-ap", "10.0.0.1/32")
	stale := np(p, "b", "itm-ap", "10.0.0.9/32")
	stale.Labels["team"] = "theirs" // someone else's label stays
	stale.Annotations = map[string]string{"note": "kept"}
	var w writes
	s, c := newSet(t, &w, same, stale)
	existing, err := s.List(ctx, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	desired := []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32"), np(p, "b", "itm-ap", "10.0.0.1/32"), np(p, "c", "itm-ap", "10.0.0.1/32")}
	taken, errs := s.Apply(ctx, p, desired, existing)
	if len(taken) != 0 || len(errs) != 0 {
		t.Fatalf("taken %v, errors %v", taken, errs)
	}
	if w != (writes{create: 1, update: 1}) {
		t.Fatalf("writes %+v, want one create (c) and one update (b)", w)
	}
	b := get(t, c, "b")
	if !slices.Equal(cidrs(b), []string{"10.0.0.1/32"}) || b.Labels["team"] != "theirs" || b.Annotations["note"] != "kept" {
		t.Fatalf("updated object %+v: content replaced, foreign labels and annotations kept", b)
	}
	if !slices.Equal(cidrs(get(t, c, "c")), []string{"10.0.0.1/32"}) {
		t.Fatal("c not created as desired")
	}
}

func TestApplyDoesNotRewriteItsOwnWriteTheCacheHasNotShownYet(t *testing.T) {
	p := owner("u1")
	var w writes
	s, c := newSet(t, &w, np(p, "a", "itm-ap", "10.0.0.9/32"))
	stale, _ := s.List(ctx, p.Name) // the cache's view, before our write
	desired := []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}
	s.Apply(ctx, p, desired, stale)
	s.Apply(ctx, p, desired, stale)
	if w.update != 1 {
		t.Fatalf("%d updates over the same cached version, want 1", w.update)
	}
	// Once the cache shows a newer version, a hand edit is put back.
	edited := get(t, c, "a")
	edited.Spec.Ingress = nil
	if err := c.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	fresh, _ := s.List(ctx, p.Name)
	s.Apply(ctx, p, desired, fresh)
	if got := cidrs(get(t, c, "a")); !slices.Equal(got, []string{"10.0.0.1/32"}) {
		t.Fatalf("hand edit not put back: %v", got)
	}
}

func TestApplyRetriesAConflictOnTheLiveObject(t *testing.T) {
	p := owner("u1")
	var w writes
	s, c := newSet(t, &w, np(p, "a", "itm-ap", "10.0.0.9/32"))
	stale, _ := s.List(ctx, p.Name)
	// Someone writes after our cache read: our update conflicts.
	other := get(t, c, "a")
	other.Labels["x"] = "y"
	if err := c.Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	w = writes{}
	if _, errs := s.Apply(ctx, p, []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}, stale); len(errs) != 0 {
		t.Fatalf("errors %v", errs)
	}
	got := get(t, c, "a")
	if w.update != 2 || !slices.Equal(cidrs(got), []string{"10.0.0.1/32"}) || got.Labels["x"] != "y" {
		t.Fatalf("%d updates, object %+v: want the conflict retried once on the live object", w.update, got)
	}
}

// After a conflict the live object decides the retry: gone, it is created
// again; now someone else's, its name is an error and it is left alone;
// already as desired, nothing more is written.
func TestApplyRetriesAConflictAsTheLiveObjectDecides(t *testing.T) {
	p := owner("u1")
	conflict := apierrors.NewConflict(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, "itm-ap", errors.New("the object has been modified"))
	ourNP := types.NamespacedName{Namespace: "a", Name: "itm-ap"}
	cases := []struct {
		name    string
		meddle  func(c client.WithWatch) error
		want    writes
		wantErr string
		check   func(t *testing.T, got *networkingv1.NetworkPolicy)
	}{
		{"gone on retry: created again", func(c client.WithWatch) error {
			if err := c.Delete(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "itm-ap"}}); err != nil {
				return err
			}
			return conflict
		}, writes{update: 1, create: 1}, "", func(t *testing.T, got *networkingv1.NetworkPolicy) {
			if !slices.Equal(cidrs(got), []string{"10.0.0.1/32"}) || !metav1.IsControlledBy(got, p) {
				t.Fatalf("recreated object %+v, want ours as desired", got)
			}
		}},
		{"someone else's on retry: an error, left alone", func(c client.WithWatch) error {
			if err := c.Delete(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "itm-ap"}}); err != nil {
				return err
			}
			if err := c.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "itm-ap"}}); err != nil {
				return err
			}
			return conflict
		}, writes{update: 1}, "update NetworkPolicy a/itm-ap: NetworkPolicy a/itm-ap exists and was not created by this policy; it is left alone",
			func(t *testing.T, got *networkingv1.NetworkPolicy) {
				if len(got.OwnerReferences) != 0 || len(got.Spec.Ingress) != 0 {
					t.Fatalf("foreign object touched: %+v", got)
				}
			}},
		{"already as desired on retry: nothing more written", func(c client.WithWatch) error {
			live := &networkingv1.NetworkPolicy{}
			if err := c.Get(ctx, ourNP, live); err != nil {
				return err
			}
			live.Spec = np(p, "a", "itm-ap", "10.0.0.1/32").Spec
			if err := c.Update(ctx, live); err != nil {
				return err
			}
			return conflict
		}, writes{update: 1}, "", func(t *testing.T, got *networkingv1.NetworkPolicy) {
			if !slices.Equal(cidrs(got), []string{"10.0.0.1/32"}) {
				t.Fatalf("object %+v, want as desired", got)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w writes
			s, c := newSetMeddled(t, &w, tc.meddle, np(p, "a", "itm-ap", "10.0.0.9/32"))
			existing, _ := s.List(ctx, p.Name)
			_, errs := s.Apply(ctx, p, []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}, existing)
			gotErr := errors.Join(errs...)
			if (tc.wantErr == "") != (gotErr == nil) || (gotErr != nil && gotErr.Error() != tc.wantErr) {
				t.Fatalf("error %v, want %q", gotErr, tc.wantErr)
			}
			// The meddler writes past the interceptor: these are ours alone.
			if w != tc.want {
				t.Fatalf("writes %+v, want %+v", w, tc.want)
			}
			got := &networkingv1.NetworkPolicy{}
			if err := c.Get(ctx, ourNP, got); err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

func TestApplyReportsANameSomeoneElseHoldsAndNeverAdoptsIt(t *testing.T) {
	p := owner("u1")
	foreign := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "itm-ap"}}
	var w writes
	s, c := newSet(t, &w, foreign)
	taken, errs := s.Apply(ctx, p, []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}, nil)
	if len(errs) != 0 || len(taken) != 1 || taken[0] != "NetworkPolicy a/itm-ap exists and was not created by this policy; it is left alone" {
		t.Fatalf("taken %q, errors %v", taken, errs)
	}
	if got := get(t, c, "a"); w != (writes{}) || len(got.OwnerReferences) != 0 || len(got.Spec.Ingress) != 0 {
		t.Fatalf("foreign object touched: writes %+v, object %+v", w, got)
	}
}

func TestApplyReplacesWhatADeletedPredecessorOfTheSameNameLeft(t *testing.T) {
	first, second := owner("u1"), owner("u2")
	var w writes
	s, c := newSet(t, &w, np(first, "a", "itm-ap", "10.0.0.9/32"))
	existing, _ := s.List(ctx, second.Name)
	if _, errs := s.Apply(ctx, second, []*networkingv1.NetworkPolicy{np(second, "a", "itm-ap", "10.0.0.1/32")}, existing); len(errs) != 0 {
		t.Fatal(errs)
	}
	got := get(t, c, "a")
	if w != (writes{create: 1, del: 1}) || len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != "u2" {
		t.Fatalf("writes %+v, owners %+v: want the predecessor's deleted and ours created, one controller", w, got.OwnerReferences)
	}
}

func TestPruneDeletesWithdrawsInPlaceAndLeavesOthersAlone(t *testing.T) {
	p := owner("u1")
	unmarked := np(p, "x", "itm-ap")
	unmarked.Labels = map[string]string{ownerLabel: p.Name} // not managed by itmanager
	var w writes
	s, c := newSet(t, &w, np(p, "keep", "itm-ap", "10.0.0.1/32"), np(p, "gone", "itm-ap", "10.0.0.1/32"),
		np(p, "stays", "itm-ap", "10.0.0.1/32"), unmarked)
	existing, _ := s.List(ctx, p.Name)
	desired := []*networkingv1.NetworkPolicy{np(p, "keep", "itm-ap", "10.0.0.1/32")}
	keep := func(o *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, bool) {
		return np(p, o.Namespace, o.Name), o.Namespace == "stays"
	}
	if errs := s.Prune(ctx, p, desired, existing, keep); len(errs) != 0 {
		t.Fatal(errs)
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "gone", Name: "itm-ap"}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
		t.Fatalf("unwanted object not deleted: %v", err)
	}
	if got := get(t, c, "stays"); len(got.Spec.Ingress) != 0 {
		t.Fatalf("claimed object not withdrawn in place: %+v", got.Spec)
	}
	get(t, c, "keep")
	get(t, c, "x")
	if w != (writes{update: 1, del: 1}) {
		t.Fatalf("writes %+v", w)
	}
	// Without keep nothing stays.
	existing, _ = s.List(ctx, p.Name)
	s.Prune(ctx, p, nil, existing, nil)
	for _, ns := range []string{"keep", "stays"} {
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "itm-ap"}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			t.Fatalf("%s not pruned: %v", ns, err)
		}
	}
	get(t, c, "x")
}

func TestEchoFilterDropsOnlyTheEventOfOurOwnWrite(t *testing.T) {
	p := owner("u1")
	var w writes
	s, c := newSet(t, &w)
	if _, errs := s.Apply(ctx, p, []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}, nil); len(errs) != 0 {
		t.Fatal(errs)
	}
	pred := s.Echoes().NotEcho()
	ours := get(t, c, "a")
	if pred.Create(event.CreateEvent{Object: ours}) {
		t.Fatal("the echo of our create started a reconcile")
	}
	if !pred.Create(event.CreateEvent{Object: ours}) {
		t.Fatal("a second event of the same version is not an echo (each write is echoed once)")
	}
	ours.Labels["x"] = "y"
	if err := c.Update(ctx, ours); err != nil {
		t.Fatal(err)
	}
	if !pred.Update(event.UpdateEvent{ObjectOld: ours, ObjectNew: get(t, c, "a")}) {
		t.Fatal("someone else's update filtered")
	}
}

func TestEchoFilterDropsOnlyTheEventOfOurOwnUpdate(t *testing.T) {
	p := owner("u1")
	var w writes
	s, c := newSet(t, &w, np(p, "a", "itm-ap", "10.0.0.9/32"))
	existing, _ := s.List(ctx, p.Name)
	if _, errs := s.Apply(ctx, p, []*networkingv1.NetworkPolicy{np(p, "a", "itm-ap", "10.0.0.1/32")}, existing); len(errs) != 0 || w.update != 1 {
		t.Fatalf("errors %v, writes %+v: want one update", errs, w)
	}
	pred := s.Echoes().NotEcho()
	ours := get(t, c, "a")
	if pred.Update(event.UpdateEvent{ObjectOld: existing[0], ObjectNew: ours}) {
		t.Fatal("the echo of our update started a reconcile")
	}
	if !pred.Update(event.UpdateEvent{ObjectOld: existing[0], ObjectNew: ours}) {
		t.Fatal("a second event of the same version is not an echo (each write is echoed once)")
	}
}

func TestBindingKindsCompareRoleRefAndSubjects(t *testing.T) {
	a := &rbacv1.RoleBinding{RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "view"}, Subjects: []rbacv1.Subject{{Kind: "Group", Name: "g"}}}
	b := a.DeepCopy()
	if !RoleBindings.SameContent(a, b) {
		t.Fatal("equal bindings differ")
	}
	b.Subjects = nil
	if RoleBindings.SameContent(a, b) {
		t.Fatal("subjects ignored")
	}
	RoleBindings.Overwrite(b, a)
	if !RoleBindings.SameContent(a, b) {
		t.Fatal("Overwrite did not copy the content")
	}
	c := &rbacv1.ClusterRoleBinding{RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "view"}}
	d := c.DeepCopy()
	d.RoleRef.Name = "edit"
	if ClusterRoleBindings.SameContent(c, d) || !strings.Contains(ClusterRoleBindings.Name, "ClusterRoleBinding") {
		t.Fatal("roleRef ignored")
	}
}
