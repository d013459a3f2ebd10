package controllers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/netpol"
)

// AccessFieldManager is the server-side apply field manager of everything the
// AccessPolicy controller generates.
const AccessFieldManager = "itmanager-access"

// AccessPolicy condition reasons beyond those in the API package.
const (
	ReasonEnforced             = "Enforced"
	ReasonAudited              = "Audited"
	ReasonForbiddenDestination = "ForbiddenDestination"
	ReasonApplyFailed          = "ApplyFailed"
	ReasonInvalidSpec          = "InvalidSpec"
	ReasonNameTaken            = "NameTaken"
)

// DefaultBindableRoles are the ClusterRoles the operator binds unless the
// installation allows others.
var DefaultBindableRoles = []string{"view", "edit"}

// DefaultClusterWideRoles are the ClusterRoles a kubernetesAccess entry
// without namespaces binds by a ClusterRoleBinding; any other is bound by a
// RoleBinding in every namespace but kube-* and itmanager's own.
var DefaultClusterWideRoles = []string{"view"}

// AccessPolicyReconciler resolves an AccessPolicy (people → devices →
// posture → addresses) and enforces it as NetworkPolicies and RBAC
// bindings. It writes only objects that differ from what it computed,
// prunes what it no longer needs, and requeues for the instant an allowed
// device's check-in becomes too old.
type AccessPolicyReconciler struct {
	client.Client
	// APIReader reads past the cache, to tell a foreign object that holds a
	// generated name from our own not yet cached.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Recorder  recorder.EventRecorder
	Workers   int
	// OperatorNamespace, DevicesNamespace and UpgradesNamespace (and every
	// Kubernetes AccountProvider's namespace) are never destinations.
	OperatorNamespace string
	DevicesNamespace  string
	UpgradesNamespace string
	// ClusterWideRoles are the bindable roles an entry without namespaces
	// binds cluster-wide (DefaultClusterWideRoles when nil).
	ClusterWideRoles []string
	// BindableRoles are the ClusterRoles the installation lets the operator
	// bind (its own RBAC grants bind on exactly these).
	BindableRoles []string
	// AddressRanges are the manager's --agent-address-cidrs (empty: any):
	// device addresses outside them, static or reported, never count.
	AddressRanges []netip.Prefix

	memo writeMemo
	own  ownWrites
}

// +kubebuilder:rbac:groups=itmanager.io,resources=accesspolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=accesspolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=onboardingrequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings;clusterrolebindings,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get

// Reconcile resolves one AccessPolicy, enforces it and reports it.
func (r *AccessPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &itmv1.AccessPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			forgetPolicy(req.Name)
			r.memo.forgetOwner(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.DeletionTimestamp != nil {
		// Every generated object is owned by the policy: the garbage
		// collector removes them.
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("AccessPolicy", klog.KObj(p))
	now := r.Clock.Now()
	base := p.DeepCopy()

	res, err := r.resolve(ctx, p, now)
	if err != nil {
		var invalid invalidSpecError
		if errors.As(err, &invalid) {
			// Who may reach what is unknown now: what an earlier, valid
			// spec granted is withdrawn (fail closed) until the spec is
			// fixed: NetworkPolicies stay and isolate, bindings stay and
			// bind no one.
			if serr := r.sync(ctx, p, nil, nil, nil, func(client.Object) bool { return true }); serr != nil {
				return ctrl.Result{}, serr
			}
			r.setReady(p, now, metav1.ConditionFalse, ReasonInvalidSpec, invalid.Error())
			setCondition(&p.Status.Conditions, p.Generation, now, itmv1.ConditionStalled, metav1.ConditionTrue, ReasonInvalidSpec, invalid.Error())
			return ctrl.Result{}, errors.Join(r.patchStatus(ctx, base, p), reconcile.TerminalError(err))
		}
		return ctrl.Result{}, err
	}
	meta.RemoveStatusCondition(&p.Status.Conditions, itmv1.ConditionStalled)

	p.Status.Devices = res.Counts
	p.Status.Denied = res.Denied
	p.Status.NetworkPolicies = count32(len(res.networkPolicies))
	p.Status.AddressBlocks = count32(len(res.Prefixes))

	var syncErr error
	if p.Spec.Mode == itmv1.AccessModeAudit {
		// Audit computes and reports; whatever Enforce generated before goes.
		syncErr = r.sync(ctx, p, nil, nil, nil, nil)
	} else {
		var taken []string
		taken, syncErr = r.syncReporting(ctx, p, res)
		res.problems = append(res.problems, taken...)
	}

	switch {
	case syncErr != nil:
		r.setReady(p, now, metav1.ConditionFalse, ReasonApplyFailed, syncErr.Error())
	case len(res.problems) > 0:
		r.setReady(p, now, metav1.ConditionFalse, res.problemReason, strings.Join(res.problems, "; "))
	case p.Spec.Mode == itmv1.AccessModeAudit:
		r.setReady(p, now, metav1.ConditionTrue, ReasonAudited, fmt.Sprintf("audit only: %d of %d devices would be allowed; nothing is written", res.Counts.Allowed, res.Counts.Matched))
	case res.Counts.Allowed == 0:
		r.setReady(p, now, metav1.ConditionTrue, itmv1.ReasonNoAllowedDevices, "no device qualifies: the selected pods are isolated from device addresses")
	default:
		r.setReady(p, now, metav1.ConditionTrue, ReasonEnforced, fmt.Sprintf("%d of %d devices allowed", res.Counts.Allowed, res.Counts.Matched))
	}
	if syncErr == nil {
		p.Status.ObservedGeneration = p.Generation
	}
	if err := r.patchStatus(ctx, base, p); err != nil {
		return ctrl.Result{}, errors.Join(syncErr, err)
	}
	recordPolicy(p)
	if syncErr != nil {
		return ctrl.Result{}, syncErr
	}
	log.V(1).Info("Resolved access policy", "matched", res.Counts.Matched, "allowed", res.Counts.Allowed, "cidrs", len(res.Prefixes))
	if res.NextChange.IsZero() {
		return ctrl.Result{}, nil
	}
	// Withdraw access the instant a check-in grows too old, ahead of
	// routine work.
	return ctrl.Result{RequeueAfter: max(res.NextChange.Sub(r.Clock.Now()), time.Millisecond), Priority: ptr.To(freshnessPriority)}, nil
}

// resolution is a resolved policy and what enforcing it takes.
type resolution struct {
	access.Result
	networkPolicies []*networkingv1.NetworkPolicy
	clusterBindings []*rbacv1.ClusterRoleBinding
	roleBindings    []*rbacv1.RoleBinding
	// problems keep the policy from being fully enforced (a forbidden
	// namespace, a role the installation does not allow).
	problems      []string
	problemReason string
}

type invalidSpecError struct{ error }

func (r *AccessPolicyReconciler) resolve(ctx context.Context, p *itmv1.AccessPolicy, now time.Time) (*resolution, error) {
	sel, err := access.Selector(p.Spec.Subjects)
	if err != nil {
		return nil, invalidSpecError{err}
	}
	requests, err := r.requests(ctx, p.Spec.Subjects)
	if err != nil {
		return nil, err
	}
	people := access.People(p.Spec.Subjects, requests)
	cands, err := r.candidates(ctx, people, sel)
	if err != nil {
		return nil, err
	}
	res := &resolution{Result: access.Resolve(access.Input{Policy: p, People: people, Selector: sel, Candidates: cands, Now: now})}

	providers, err := r.providers(ctx)
	if err != nil {
		return nil, err
	}
	protected := access.ProtectedFrom(r.OperatorNamespace, r.DevicesNamespace, r.upgradesNamespace(), providers)
	targets, problems, err := r.targets(ctx, p, protected)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		res.problemReason = ReasonForbiddenDestination
	}
	res.networkPolicies = netpol.Compile(netpol.Input{Owner: p, Targets: targets, Prefixes: res.Prefixes})

	var sas []rbacv1.Subject
	var all []string
	if len(p.Spec.KubernetesAccess) > 0 {
		if sas, err = r.serviceAccounts(ctx, access.AccountRefs(people, requests, providers)); err != nil {
			return nil, err
		}
		if all, err = r.spreadNamespaces(ctx, p); err != nil {
			return nil, err
		}
	}
	var roleProblems []string
	res.clusterBindings, res.roleBindings, roleProblems = access.Bindings(access.BindingInput{
		Owner: p, ServiceAccounts: sas,
		AllowedRoles: r.BindableRoles, ClusterWideRoles: r.clusterWideRoles(), Namespaces: all, Protected: protected,
		Exists: func(name string) bool {
			ns := &corev1.Namespace{}
			return r.Get(ctx, types.NamespacedName{Name: name}, ns) == nil && usableNamespace(ns)
		},
	})
	if len(roleProblems) > 0 && res.problemReason == "" {
		res.problemReason = itmv1.ReasonRoleNotAllowed
	}
	res.problems = append(problems, roleProblems...)
	return res, nil
}

// requests are the OnboardingRequests of the listed users and of every
// member of the listed groups, by name.
func (r *AccessPolicyReconciler) requests(ctx context.Context, s itmv1.Subjects) (map[string]*itmv1.OnboardingRequest, error) {
	out := map[string]*itmv1.OnboardingRequest{}
	for _, u := range s.Users {
		req := &itmv1.OnboardingRequest{}
		switch err := r.Get(ctx, types.NamespacedName{Name: u}, req); {
		case err == nil:
			out[u] = req
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	for _, g := range s.Groups {
		list := &itmv1.OnboardingRequestList{}
		if err := r.List(ctx, list, client.MatchingFields{IndexOnboardingGroup: g}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			out[list.Items[i].Name] = &list.Items[i]
		}
	}
	return out, nil
}

// candidates are the devices assigned to the people and those the selector
// matches, with their live check-ins and address conflicts.
func (r *AccessPolicyReconciler) candidates(ctx context.Context, people map[string]bool, sel labels.Selector) ([]access.Candidate, error) {
	var devs []itmv1.Device
	for person := range people {
		list := &itmv1.DeviceList{}
		if err := r.List(ctx, list, client.MatchingFields{IndexDeviceAssignee: person}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		devs = append(devs, list.Items...)
	}
	if sel != nil {
		list := &itmv1.DeviceList{}
		if err := r.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		devs = append(devs, list.Items...)
	}
	out := make([]access.Candidate, 0, len(devs))
	for i := range devs {
		d := &devs[i]
		c := access.Candidate{Device: d, AddressRanges: r.AddressRanges}
		var err error
		if c.LastCheckIn, err = RenewTime(ctx, r.Client, r.DevicesNamespace, d); err != nil {
			return nil, err
		}
		if c.Conflicts, err = AddressConflicts(ctx, r.Client, d); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (r *AccessPolicyReconciler) providers(ctx context.Context) (map[string]*itmv1.AccountProvider, error) {
	list := &itmv1.AccountProviderList{}
	if err := r.List(ctx, list); err != nil {
		return nil, err
	}
	out := make(map[string]*itmv1.AccountProvider, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

func (r *AccessPolicyReconciler) upgradesNamespace() string {
	if r.UpgradesNamespace == "" {
		return DefaultUpgradesNamespace
	}
	return r.UpgradesNamespace
}

func (r *AccessPolicyReconciler) clusterWideRoles() []string {
	if r.ClusterWideRoles == nil {
		return DefaultClusterWideRoles
	}
	return r.ClusterWideRoles
}

// serviceAccounts looks up, past the cache (the manager never lists
// ServiceAccounts), each ServiceAccount the requests claim, and keeps those
// that carry the claiming request's ownership mark.
func (r *AccessPolicyReconciler) serviceAccounts(ctx context.Context, refs []access.AccountRef) ([]rbacv1.Subject, error) {
	found := map[types.NamespacedName]metav1.ObjectMeta{}
	for _, ref := range refs {
		key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
		if _, ok := found[key]; ok {
			continue
		}
		sa := &metav1.PartialObjectMetadata{}
		sa.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
		switch err := r.APIReader.Get(ctx, key, sa); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("read ServiceAccount %s: %w", key, err)
		default:
			found[key] = sa.ObjectMeta
		}
	}
	return access.ServiceAccounts(refs, found), nil
}

// spreadNamespaces are the usable namespaces when some entry of the policy
// binds a role cluster-wide that is not a cluster-wide role (it becomes a
// RoleBinding in each); nil otherwise.
func (r *AccessPolicyReconciler) spreadNamespaces(ctx context.Context, p *itmv1.AccessPolicy) ([]string, error) {
	if !slices.ContainsFunc(p.Spec.KubernetesAccess, func(ka itmv1.KubernetesAccess) bool {
		return len(ka.Namespaces) == 0 && !slices.Contains(r.clusterWideRoles(), ka.ClusterRole)
	}) {
		return nil, nil
	}
	list := &corev1.NamespaceList{}
	if err := r.List(ctx, list); err != nil {
		return nil, err
	}
	var out []string
	for i := range list.Items {
		if usableNamespace(&list.Items[i]) {
			out = append(out, list.Items[i].Name)
		}
	}
	return out, nil
}

// targets are the existing, non-terminating destination namespaces with the
// destinations that name them. A protected namespace named outright is a
// problem to report; a selector never matches one, nor a kube-* namespace.
func (r *AccessPolicyReconciler) targets(ctx context.Context, p *itmv1.AccessPolicy, protected access.Protected) ([]netpol.Target, []string, error) {
	byNS := map[string][]itmv1.Destination{}
	var problems []string
	usable := func(ns *corev1.Namespace) bool { return usableNamespace(ns) && protected.Why(ns.Name) == "" }
	for i, d := range p.Spec.Destinations {
		if d.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(d.NamespaceSelector)
			if err != nil {
				return nil, nil, invalidSpecError{fmt.Errorf("spec.destinations[%d].namespaceSelector: %w", i, err)}
			}
			list := &corev1.NamespaceList{}
			if err := r.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
				return nil, nil, err
			}
			for j := range list.Items {
				if usable(&list.Items[j]) && protected.Selectable(list.Items[j].Name) {
					byNS[list.Items[j].Name] = append(byNS[list.Items[j].Name], d)
				}
			}
			continue
		}
		for _, name := range d.Namespaces {
			if why := protected.Why(name); why != "" {
				problems = append(problems, fmt.Sprintf("spec.destinations[%d].namespaces: %s", i, why))
				continue
			}
			ns := &corev1.Namespace{}
			if err := r.Get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
				if apierrors.IsNotFound(err) {
					continue // enforced as soon as the namespace exists
				}
				return nil, nil, err
			}
			if usable(ns) {
				byNS[name] = append(byNS[name], d)
			}
		}
	}
	out := make([]netpol.Target, 0, len(byNS))
	for ns, dests := range byNS {
		out = append(out, netpol.Target{Namespace: ns, Destinations: dests})
	}
	return out, problems, nil
}

// usableNamespace reports whether a namespace can receive objects: it is
// not being deleted.
func usableNamespace(ns *corev1.Namespace) bool {
	return ns.DeletionTimestamp == nil && ns.Status.Phase != corev1.NamespaceTerminating
}

// syncReporting enforces a resolution; generated names held by objects
// itmanager did not create are reported, not taken over.
func (r *AccessPolicyReconciler) syncReporting(ctx context.Context, p *itmv1.AccessPolicy, res *resolution) ([]string, error) {
	err := r.sync(ctx, p, res.networkPolicies, res.clusterBindings, res.roleBindings, r.claimed(ctx, p))
	var taken nameTakenError
	if errors.As(err, &taken) {
		if res.problemReason == "" {
			res.problemReason = ReasonNameTaken
		}
		return []string(taken), nil
	}
	return nil, err
}

// nameTakenError lists generated objects whose names a foreign object holds.
type nameTakenError []string

func (e nameTakenError) Error() string { return strings.Join(e, "; ") }

// claimed reports whether the spec still names where a generated object
// lives (its destination namespace, its role there), though it is no longer
// wanted: that object is withdrawn in place, never deleted.
func (r *AccessPolicyReconciler) claimed(ctx context.Context, p *itmv1.AccessPolicy) func(client.Object) bool {
	// namespace reads the object's namespace; ok is false when it is gone
	// or being deleted (it takes its pods and objects along).
	namespace := func(name string) (ns *corev1.Namespace, ok bool, err error) {
		ns = &corev1.Namespace{}
		switch err := r.Get(ctx, types.NamespacedName{Name: name}, ns); {
		case apierrors.IsNotFound(err):
			return nil, false, nil
		case err != nil:
			return nil, false, err
		}
		return ns, usableNamespace(ns), nil
	}
	return func(o client.Object) bool {
		switch o := o.(type) {
		case *networkingv1.NetworkPolicy:
			ns, ok, err := namespace(o.Namespace)
			if err != nil {
				return true // unknown: keep it isolating
			}
			return ok && access.DestinationClaimed(&p.Spec, o.Namespace, labels.Set(ns.Labels))
		case *rbacv1.RoleBinding:
			// A binding deleted in error grants nothing: unknown deletes.
			if _, ok, err := namespace(o.Namespace); err != nil || !ok {
				return false
			}
			return o.RoleRef.Kind == "ClusterRole" && access.BindingClaimed(&p.Spec, r.clusterWideRoles(), o.RoleRef.Name, o.Namespace)
		case *rbacv1.ClusterRoleBinding:
			return o.RoleRef.Kind == "ClusterRole" && access.BindingClaimed(&p.Spec, r.clusterWideRoles(), o.RoleRef.Name, "")
		}
		return false
	}
}

// withdrawn is an unwanted object as it stays while the spec still claims
// it: a NetworkPolicy isolating what it selected, a binding binding no one.
func withdrawn(p *itmv1.AccessPolicy, o client.Object) client.Object {
	meta := metav1.ObjectMeta{Namespace: o.GetNamespace(), Name: o.GetName(), Labels: netpol.Labels(p.Name), OwnerReferences: []metav1.OwnerReference{netpol.OwnerReference(p)}}
	switch o := o.(type) {
	case *networkingv1.NetworkPolicy:
		return netpol.Isolating(p, o)
	case *rbacv1.RoleBinding:
		return &rbacv1.RoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"}, ObjectMeta: meta, RoleRef: o.RoleRef}
	case *rbacv1.ClusterRoleBinding:
		return &rbacv1.ClusterRoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"}, ObjectMeta: meta, RoleRef: o.RoleRef}
	}
	return nil
}

// sync makes the generated objects exactly the desired ones: applies those
// that differ from what is there; of the ones no longer wanted, withdraws
// in place those the spec still claims (claimed; nil: none) and deletes the
// rest.
func (r *AccessPolicyReconciler) sync(ctx context.Context, p *itmv1.AccessPolicy, nps []*networkingv1.NetworkPolicy, crbs []*rbacv1.ClusterRoleBinding, rbs []*rbacv1.RoleBinding, claimed func(client.Object) bool) error {
	mine := client.MatchingLabels{netpol.LabelAccessPolicy: p.Name}
	var existing []client.Object
	npList := &networkingv1.NetworkPolicyList{}
	crbList := &rbacv1.ClusterRoleBindingList{}
	rbList := &rbacv1.RoleBindingList{}
	for _, l := range []client.ObjectList{npList, crbList, rbList} {
		if err := r.List(ctx, l, mine); err != nil {
			return err
		}
	}
	for i := range npList.Items {
		existing = append(existing, &npList.Items[i])
	}
	for i := range crbList.Items {
		existing = append(existing, &crbList.Items[i])
	}
	for i := range rbList.Items {
		existing = append(existing, &rbList.Items[i])
	}

	var desired []client.Object
	for _, o := range nps {
		desired = append(desired, o)
	}
	for _, o := range crbs {
		desired = append(desired, o)
	}
	for _, o := range rbs {
		desired = append(desired, o)
	}

	type key struct{ kind, ns, name string }
	keyOf := func(o client.Object) key {
		return key{fmt.Sprintf("%T", o), o.GetNamespace(), o.GetName()}
	}
	have := map[key]client.Object{}
	for _, o := range existing {
		// A predecessor's objects (same name, other UID) are stale too.
		if metav1.IsControlledBy(o, p) {
			have[keyOf(o)] = o
		}
	}
	var errs []error
	var taken nameTakenError
	want := map[key]bool{}
	for _, o := range desired {
		k := keyOf(o)
		want[k] = true
		memoKey := fmt.Sprint(k)
		cur, ok := have[k]
		cachedRV := ""
		if ok {
			cachedRV = cur.GetResourceVersion()
			if upToDate(cur, o) || r.memo.pending(p.Name, memoKey, cachedRV, o) {
				continue
			}
		} else {
			// Not in the cache: absent, just created by us and not seen
			// yet, or someone else's. A live read tells.
			live, why, err := r.liveObject(ctx, o, p)
			switch {
			case err != nil:
				errs = append(errs, err)
				continue
			case why != "":
				taken = append(taken, why)
				continue
			case live != nil && upToDate(live, o):
				continue
			}
			cur = live
		}
		if err := r.write(ctx, p, o, cur); err != nil {
			errs = append(errs, err)
			r.memo.forget(p.Name, memoKey)
			continue
		}
		r.memo.wrote(p.Name, memoKey, cachedRV, o)
	}
	for _, o := range existing {
		if want[keyOf(o)] && metav1.IsControlledBy(o, p) {
			continue
		}
		if !isGeneratedBy(o, p.Name) {
			continue
		}
		if claimed != nil && metav1.IsControlledBy(o, p) && claimed(o) {
			// Withdrawing access never opens pods.
			w := withdrawn(p, o)
			if upToDate(o, w) {
				continue
			}
			r.memo.forget(p.Name, fmt.Sprint(keyOf(o)))
			if err := r.write(ctx, p, w, o); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		r.memo.forget(p.Name, fmt.Sprint(keyOf(o)))
		uid := o.GetUID()
		if err := r.Delete(ctx, o, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete %s %s: %w", kindOf(o), objectKey(o), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(taken) > 0 {
		return taken
	}
	return nil
}

// isGeneratedBy reports whether an object carries the marks of a policy of
// this name (of any UID) and is controlled by an AccessPolicy: only those
// are ever pruned.
func isGeneratedBy(o client.Object, policy string) bool {
	ref := metav1.GetControllerOf(o)
	return o.GetLabels()[netpol.LabelManagedBy] == netpol.ManagedByValue && o.GetLabels()[netpol.LabelAccessPolicy] == policy &&
		ref != nil && ref.Kind == "AccessPolicy" && ref.Name == policy && strings.HasPrefix(ref.APIVersion, itmv1.GroupVersion.Group+"/")
}

// liveObject reads a generated object past the cache: nil when it does not
// exist, or a reason when someone else holds its name (never adopted).
func (r *AccessPolicyReconciler) liveObject(ctx context.Context, desired client.Object, p *itmv1.AccessPolicy) (client.Object, string, error) {
	live := desired.DeepCopyObject().(client.Object)
	switch err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), live); {
	case apierrors.IsNotFound(err):
		return nil, "", nil
	case err != nil:
		return nil, "", err
	case metav1.IsControlledBy(live, p):
		return live, "", nil
	case isGeneratedBy(live, p.Name):
		// A deleted predecessor of the same name generated it, and the
		// garbage collector has not got to it yet: it goes now, so ours
		// never carries two controllers.
		uid := live.GetUID()
		if err := r.Delete(ctx, live, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return nil, "", fmt.Errorf("delete the previous policy's %s %s: %w", kindOf(live), objectKey(live), err)
		}
		return nil, "", nil
	}
	return nil, fmt.Sprintf("%s %s exists and was not created by this policy; it is left alone", kindOf(desired), objectKey(desired)), nil
}

// upToDate reports whether the existing object already has every label,
// the owner reference and the content the desired one has.
func upToDate(cur, desired client.Object) bool {
	for k, v := range desired.GetLabels() {
		if cur.GetLabels()[k] != v {
			return false
		}
	}
	if !metav1.IsControlledBy(cur, &metav1.ObjectMeta{UID: desired.GetOwnerReferences()[0].UID}) {
		return false
	}
	switch d := desired.(type) {
	case *networkingv1.NetworkPolicy:
		return equality.Semantic.DeepEqual(cur.(*networkingv1.NetworkPolicy).Spec, d.Spec)
	case *rbacv1.ClusterRoleBinding:
		c := cur.(*rbacv1.ClusterRoleBinding)
		return equality.Semantic.DeepEqual(c.RoleRef, d.RoleRef) && equality.Semantic.DeepEqual(c.Subjects, d.Subjects)
	case *rbacv1.RoleBinding:
		c := cur.(*rbacv1.RoleBinding)
		return equality.Semantic.DeepEqual(c.RoleRef, d.RoleRef) && equality.Semantic.DeepEqual(c.Subjects, d.Subjects)
	}
	return false
}

// write makes a generated object what desired says: created when absent
// (cur nil), otherwise cur updated under an optimistic lock, with its
// content replaced and our labels and controller reference set (other
// labels, annotations and owner references stay). A conflict (the cache
// was behind) reads the object live and tries once more. Not server-side
// apply: for a NetworkPolicy of 1,000 CIDRs (40 KiB) the API server spends
// about six times as long on an apply as on a create or an update, and a
// whole-content update also puts back a hand edit under any field manager.
func (r *AccessPolicyReconciler) write(ctx context.Context, p *itmv1.AccessPolicy, desired, cur client.Object) error {
	if cur == nil {
		obj := desired.DeepCopyObject().(client.Object)
		if err := r.Create(ctx, obj, client.FieldOwner(AccessFieldManager)); err != nil {
			return fmt.Errorf("create %s %s: %w", kindOf(desired), objectKey(desired), err)
		}
		r.own.wrote(obj)
		return nil
	}
	obj := overwritten(cur, desired)
	err := r.Update(ctx, obj, client.FieldOwner(AccessFieldManager))
	if apierrors.IsConflict(err) {
		live, why, lerr := r.liveObject(ctx, desired, p)
		switch {
		case lerr != nil:
			err = lerr
		case why != "":
			err = errors.New(why)
		case live == nil:
			return r.write(ctx, p, desired, nil)
		case upToDate(live, desired):
			return nil
		default:
			obj = overwritten(live, desired)
			err = r.Update(ctx, obj, client.FieldOwner(AccessFieldManager))
		}
	}
	if err != nil {
		return fmt.Errorf("update %s %s: %w", kindOf(desired), objectKey(desired), err)
	}
	r.own.wrote(obj)
	return nil
}

// overwritten is cur (a copy, keeping its resourceVersion) with desired's
// content, labels and controller reference.
func overwritten(cur, desired client.Object) client.Object {
	out := cur.DeepCopyObject().(client.Object)
	ls := out.GetLabels()
	if ls == nil {
		ls = map[string]string{}
	}
	for k, v := range desired.GetLabels() {
		ls[k] = v
	}
	out.SetLabels(ls)
	refs := out.GetOwnerReferences()
	for _, want := range desired.GetOwnerReferences() {
		if i := slices.IndexFunc(refs, func(ref metav1.OwnerReference) bool { return ref.UID == want.UID }); i >= 0 {
			refs[i] = want
		} else {
			refs = append(refs, want)
		}
	}
	out.SetOwnerReferences(refs)
	switch o := out.(type) {
	case *networkingv1.NetworkPolicy:
		o.Spec = *desired.(*networkingv1.NetworkPolicy).Spec.DeepCopy()
	case *rbacv1.ClusterRoleBinding:
		d := desired.(*rbacv1.ClusterRoleBinding)
		o.RoleRef, o.Subjects = d.RoleRef, slices.Clone(d.Subjects)
	case *rbacv1.RoleBinding:
		d := desired.(*rbacv1.RoleBinding)
		o.RoleRef, o.Subjects = d.RoleRef, slices.Clone(d.Subjects)
	}
	return out
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *networkingv1.NetworkPolicy:
		return "NetworkPolicy"
	case *rbacv1.ClusterRoleBinding:
		return "ClusterRoleBinding"
	case *rbacv1.RoleBinding:
		return "RoleBinding"
	}
	return fmt.Sprintf("%T", o)
}

func objectKey(o client.Object) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

func (r *AccessPolicyReconciler) setReady(p *itmv1.AccessPolicy, now time.Time, status metav1.ConditionStatus, reason, msg string) {
	old := meta.FindStatusCondition(p.Status.Conditions, itmv1.ConditionReady)
	setCondition(&p.Status.Conditions, p.Generation, now, itmv1.ConditionReady, status, reason, msg)
	if r.Recorder == nil || (old != nil && old.Status == status && old.Reason == reason) {
		return
	}
	kind := corev1.EventTypeNormal
	if status != metav1.ConditionTrue {
		kind = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(p, nil, kind, reason, "Resolve", "%s", msg)
}

// patchStatus writes the status once, only when it changed, by server-side
// apply under AccessFieldManager: the operator owns this status outright,
// so a reconcile that ran on a cache a step behind its own last write
// neither conflicts nor loses anything (the next event recomputes it).
func (r *AccessPolicyReconciler) patchStatus(ctx context.Context, base, p *itmv1.AccessPolicy) error {
	const memoKey = "status"
	if equality.Semantic.DeepEqual(base.Status, p.Status) || r.memo.pending(p.Name, memoKey, base.ResourceVersion, p.Status) {
		return nil
	}
	if err := applyStatus(ctx, r.Client, p, &p.Status, AccessFieldManager); err != nil {
		r.memo.forget(p.Name, memoKey)
		return err
	}
	r.memo.wrote(p.Name, memoKey, base.ResourceVersion, p.Status)
	return nil
}

func count32(n int) int32 {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n) //nolint:gosec // bounded just above
}

// SetupWithManager watches AccessPolicies, what they generate, and
// everything resolution reads, mapping each event only to the policies it
// can concern.
func (r *AccessPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("accesspolicy").
		For(&itmv1.AccessPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&networkingv1.NetworkPolicy{}, builder.WithPredicates(r.own.notEcho())).
		Owns(&rbacv1.ClusterRoleBinding{}, builder.WithPredicates(r.own.notEcho())).
		Owns(&rbacv1.RoleBinding{}, builder.WithPredicates(r.own.notEcho())).
		Watches(&itmv1.Device{}, r.deviceHandler(), builder.WithPredicates(deviceAccessChanged())).
		Watches(&itmv1.OnboardingRequest{}, handler.EnqueueRequestsFromMapFunc(r.requestToPolicies),
			builder.WithPredicates(requestAccessChanged())).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.namespaceToPolicies),
			builder.WithPredicates(namespaceChanged())).
		Watches(&itmv1.AccountProvider{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&coordinationv1.Lease{}, r.leaseHandler()).
		Complete(r)
}

// deviceAccessChanged passes Device changes resolution reads: spec, labels,
// reported facts, deletion.
func deviceAccessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(o.Status.Observed, n.Status.Observed) || n.DeletionTimestamp != nil
	}}
}

func requestAccessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.OnboardingRequest), e.ObjectNew.(*itmv1.OnboardingRequest)
		return access.IsActive(o) != access.IsActive(n) || !slices.Equal(o.Spec.Groups, n.Spec.Groups) ||
			o.Status.Phase != n.Status.Phase || !equality.Semantic.DeepEqual(o.Status.Accounts, n.Status.Accounts)
	}}
}

func namespaceChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Namespace), e.ObjectNew.(*corev1.Namespace)
		return !equality.Semantic.DeepEqual(o.Labels, n.Labels) || o.Status.Phase != n.Status.Phase ||
			(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
	}}
}

// policiesForDevice are the policies whose subjects can select the device:
// by its assignee, the assignee's groups, or a matching deviceSelector.
func (r *AccessPolicyReconciler) policiesForDevice(ctx context.Context, d *itmv1.Device) []itmv1.AccessPolicy {
	var keys []string
	if a := d.Spec.Assignee; a != "" {
		keys = append(keys, "user:"+a)
		req := &itmv1.OnboardingRequest{}
		if err := r.Get(ctx, types.NamespacedName{Name: a}, req); err == nil {
			for _, g := range req.Spec.Groups {
				keys = append(keys, "group:"+g)
			}
		}
	}
	keys = append(keys, PolicyKeyDeviceSelector)
	seen := map[string]bool{}
	var out []itmv1.AccessPolicy
	for _, k := range keys {
		list := &itmv1.AccessPolicyList{}
		if err := r.List(ctx, list, client.MatchingFields{IndexPolicySubject: k}, client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		for _, p := range list.Items {
			if seen[p.Name] {
				continue
			}
			if k == PolicyKeyDeviceSelector {
				sel, err := access.Selector(p.Spec.Subjects)
				if err != nil || sel == nil || !sel.Matches(labels.Set(d.Labels)) {
					continue
				}
			}
			seen[p.Name] = true
			out = append(out, p)
		}
	}
	return out
}

func requestsFor(ps []itmv1.AccessPolicy) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(ps))
	for _, p := range ps {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	}
	return out
}

// deviceToPolicies maps a Device to the policies that can select it, and to
// those of the Devices sharing one of its addresses (a conflict appearing
// or clearing changes their verdicts too). The handler maps both the old and
// the new object of an update, so a device leaving a policy reaches it.
func (r *AccessPolicyReconciler) deviceToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	ps := r.policiesForDevice(ctx, d)
	for _, addr := range DeviceAddresses(d) {
		others, _ := OtherClaimants(ctx, r.Client, addr, d.Name)
		for _, name := range others {
			other := &itmv1.Device{}
			if err := r.Get(ctx, types.NamespacedName{Name: name}, other); err == nil {
				ps = append(ps, r.policiesForDevice(ctx, other)...)
			}
		}
	}
	return requestsFor(ps)
}

// deviceHandler maps Device events with deviceToPolicies, except an update
// of reported facts alone (access.ReportOnly): it reaches only the policies
// whose verdict on the device it changes. Agents report facts all the time
// that no policy looks at; at fleet scale, reconciling every policy of the
// device's owner for each would keep the queue full and delay the changes
// that matter.
func (r *AccessPolicyReconciler) deviceHandler() handler.EventHandler {
	mapped := handler.EnqueueRequestsFromMapFunc(r.deviceToPolicies)
	return handler.Funcs{
		CreateFunc: mapped.Create, DeleteFunc: mapped.Delete, GenericFunc: mapped.Generic,
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
			if !access.ReportOnly(o, n) {
				mapped.Update(ctx, e, q)
				return
			}
			for _, req := range r.reportToPolicies(ctx, o, n) {
				q.Add(req)
			}
		},
	}
}

// reportToPolicies are the policies selecting a device whose verdict on it
// a ReportOnly update from old to cur changes, judged with its live
// check-in and conflicts; every policy selecting it when those cannot be
// read.
func (r *AccessPolicyReconciler) reportToPolicies(ctx context.Context, old, cur *itmv1.Device) []reconcile.Request {
	ps := r.policiesForDevice(ctx, cur)
	after := access.Candidate{Device: cur, AddressRanges: r.AddressRanges}
	var err error
	if after.LastCheckIn, err = RenewTime(ctx, r.Client, r.DevicesNamespace, cur); err == nil {
		after.Conflicts, err = AddressConflicts(ctx, r.Client, cur)
	}
	if err != nil {
		return requestsFor(ps)
	}
	before := after
	before.Device = old
	now := r.Clock.Now()
	return requestsFor(slices.DeleteFunc(ps, func(p itmv1.AccessPolicy) bool {
		return !access.VerdictChanged(before, after, p.Spec.Posture, now)
	}))
}

func (r *AccessPolicyReconciler) requestToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	req := o.(*itmv1.OnboardingRequest)
	keys := []string{"user:" + req.Name}
	for _, g := range req.Spec.Groups {
		keys = append(keys, "group:"+g)
	}
	return r.policiesByKeys(ctx, IndexPolicySubject, keys)
}

func (r *AccessPolicyReconciler) namespaceToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesByKeys(ctx, IndexPolicyNamespace, []string{"ns:" + o.GetName(), PolicyKeyNamespaceSelector, PolicyKeyAllNamespaces})
}

func (r *AccessPolicyReconciler) policiesByKeys(ctx context.Context, index string, keys []string) []reconcile.Request {
	var out []reconcile.Request
	for _, k := range keys {
		list := &itmv1.AccessPolicyList{}
		if err := r.List(ctx, list, client.MatchingFields{index: k}, client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		out = append(out, requestsFor(list.Items)...)
	}
	return out
}

func (r *AccessPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &itmv1.AccessPolicyList{}
	if err := r.List(ctx, list); err != nil {
		return nil
	}
	return requestsFor(list.Items)
}

// leaseHandler maps a check-in to the policies whose verdict it changes: a
// renewal that makes the device fresh again under a policy's maxCheckInAge.
// Renewals of a device every policy already counts as fresh cost no
// reconcile; going stale is the policy's own requeue.
func (r *AccessPolicyReconciler) leaseHandler() handler.EventHandler {
	devices := func(ctx context.Context, l client.Object) []itmv1.Device {
		switch l.GetNamespace() {
		case r.DevicesNamespace:
			d := &itmv1.Device{}
			if err := r.Get(ctx, types.NamespacedName{Name: l.GetName()}, d); err != nil {
				return nil
			}
			return []itmv1.Device{*d}
		case NodeLeaseNamespace:
			list := &itmv1.DeviceList{}
			if err := r.List(ctx, list, client.MatchingFields{IndexDeviceNodeName: l.GetName()}); err != nil {
				return nil
			}
			return list.Items
		}
		return nil
	}
	enqueue := func(ctx context.Context, l client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request], keep func(*itmv1.AccessPolicy) bool) {
		for _, d := range devices(ctx, l) {
			for _, p := range r.policiesForDevice(ctx, &d) {
				if p.Spec.Posture != nil && p.Spec.Posture.MaxCheckInAge != nil && keep(&p) {
					q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
				}
			}
		}
	}
	all := func(*itmv1.AccessPolicy) bool { return true }
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.Object.(*coordinationv1.Lease).Spec.RenewTime != nil {
				enqueue(ctx, e.Object, q, all)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q, all)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*coordinationv1.Lease), e.ObjectNew.(*coordinationv1.Lease)
			if equality.Semantic.DeepEqual(o.Spec.RenewTime, n.Spec.RenewTime) {
				return
			}
			now := r.Clock.Now()
			flips := func(p *itmv1.AccessPolicy) bool {
				maxAge := p.Spec.Posture.MaxCheckInAge.Duration
				return fresh(o.Spec.RenewTime, maxAge, now) != fresh(n.Spec.RenewTime, maxAge, now)
			}
			// The common renewal flips no verdict of any policy: say so from
			// one uncopied list, before looking up the device and whom it
			// concerns.
			if !r.anyPolicy(ctx, flips) {
				return
			}
			enqueue(ctx, n, q, flips)
		},
	}
}

// anyPolicy reports whether some AccessPolicy with maxCheckInAge satisfies
// keep (true when they cannot be listed, so nothing is missed).
func (r *AccessPolicyReconciler) anyPolicy(ctx context.Context, keep func(*itmv1.AccessPolicy) bool) bool {
	list := &itmv1.AccessPolicyList{}
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return true
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.Posture != nil && p.Spec.Posture.MaxCheckInAge != nil && keep(p) {
			return true
		}
	}
	return false
}

// fresh is a policy's check-in verdict for a renew time, as posture decides it.
func fresh(renew *metav1.MicroTime, maxAge time.Duration, now time.Time) bool {
	return renew != nil && !renew.After(now.Add(device.MaxClockSkew)) && now.Before(renew.Add(maxAge))
}
