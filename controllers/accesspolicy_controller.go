package controllers

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/index"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/netpol"
	"github.com/itmanager-io/itmanager/internal/owned"
)

// AccessFieldManager is the server-side apply field manager of everything the
// AccessPolicy controller generates.
const AccessFieldManager = "itmanager-access"

// accessEventAction is the action of the AccessPolicy's Ready events.
const accessEventAction = "Resolve"

// DefaultBindableRoles are the ClusterRoles the operator binds unless the
// installation allows others.
var DefaultBindableRoles = []string{"view", "edit"}

// DefaultClusterWideRoles are the ClusterRoles a kubernetesAccess entry
// without namespaces binds by a ClusterRoleBinding; any other is bound by a
// RoleBinding in every namespace but kube-* and itmanager's own.
var DefaultClusterWideRoles = []string{"view"}

// AccessPolicyReconciler resolves an AccessPolicy (people → devices →
// posture → addresses) and enforces it as NetworkPolicies and RBAC
// bindings. It gathers one snapshot, decides with access.Compute, writes
// only objects that differ from what it computed, prunes what it no longer
// needs, and requeues for the instant an allowed device's check-in becomes
// too old.
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

	status kit.Status
	// pending are the observed changes not yet enforced, for
	// itmanager_access_propagation_seconds.
	pending pendingChanges
	// claims answers which Devices claim an address.
	claims *index.Claims
	nps    *owned.Set[*networkingv1.NetworkPolicy, *networkingv1.NetworkPolicyList]
	crbs   *owned.Set[*rbacv1.ClusterRoleBinding, *rbacv1.ClusterRoleBindingList]
	rbs    *owned.Set[*rbacv1.RoleBinding, *rbacv1.RoleBindingList]
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
func (r *AccessPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, rerr error) {
	p := &itmv1.AccessPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			forgetPolicy(req.Name)
			r.pending.take(req.Name)
			r.nps.Forget(req.Name)
			r.crbs.Forget(req.Name)
			r.rbs.Forget(req.Name)
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
	// The change that enqueued this reconcile, if a Device or Lease did:
	// it has reached the NetworkPolicies when enforce succeeds.
	changed, hasChange := r.pending.take(p.Name)
	enforced := false
	defer func() {
		switch {
		case !hasChange:
		case enforced:
			propagationSeconds.Observe(r.Clock.Since(changed).Seconds())
		case rerr != nil && !errors.Is(rerr, reconcile.TerminalError(nil)):
			// Retried: the change is still on its way.
			r.pending.putBack(p.Name, changed)
		}
	}()

	sels, invalid := access.ParseSelectors(&p.Spec)
	if invalid != nil {
		// Who may reach what is unknown now: what an earlier, valid spec
		// granted is withdrawn (fail closed) until the spec is fixed:
		// NetworkPolicies stay and isolate, bindings stay and bind no one.
		have, err := r.generated(ctx, p.Name)
		if err == nil {
			_, err = r.enforce(ctx, p, have, generatedObjects{}, &access.Withdrawal{Policy: p, All: true})
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, errors.Join(r.report(ctx, base, p, now, access.Outcome{Invalid: invalid}), reconcile.TerminalError(invalid))
	}

	snap, err := r.gather(ctx, p, sels)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := access.Compute(snap.Snapshot, r.config(), now)
	p.Status.Devices = plan.Counts
	p.Status.Denied = plan.Denied
	p.Status.NetworkPolicies = count32(len(plan.NetworkPolicies))
	p.Status.AddressBlocks = count32(len(plan.Prefixes))

	out := access.Outcome{Forbidden: plan.Forbidden, Refused: plan.Refused, Audit: p.Spec.Mode == itmv1.AccessModeAudit, Counts: plan.Counts}
	if out.Audit {
		// Audit computes and reports; whatever Enforce generated before goes.
		_, out.ApplyErr = r.enforce(ctx, p, snap.have, generatedObjects{}, nil)
	} else {
		want := generatedObjects{nps: plan.NetworkPolicies, crbs: plan.ClusterRoleBindings, rbs: plan.RoleBindings}
		out.Taken, out.ApplyErr = r.enforce(ctx, p, snap.have, want,
			&access.Withdrawal{Policy: p, ClusterWideRoles: r.clusterWideRoles(), Namespaces: snap.Namespaces, Wanted: access.InPlace(p, plan.NetworkPolicies, snap.have.nps)})
	}
	if err := r.report(ctx, base, p, now, out); err != nil {
		return ctrl.Result{}, errors.Join(out.ApplyErr, err)
	}
	recordPolicy(p)
	if out.ApplyErr != nil {
		return ctrl.Result{}, out.ApplyErr
	}
	enforced = !out.Audit
	log.V(1).Info("Resolved access policy", "matched", plan.Counts.Matched, "allowed", plan.Counts.Allowed, "cidrs", len(plan.Prefixes))
	if plan.NextChange.IsZero() {
		return ctrl.Result{}, nil
	}
	// Withdraw access the instant a check-in grows too old, ahead of
	// routine work.
	return kit.Urgent(kit.At(r.Clock.Now(), plan.NextChange)), nil
}

// generatedObjects are a policy's objects of each generated kind.
type generatedObjects struct {
	nps  []*networkingv1.NetworkPolicy
	crbs []*rbacv1.ClusterRoleBinding
	rbs  []*rbacv1.RoleBinding
}

// enforce makes the generated objects exactly want: first every kind's
// writes, then every kind's prunes, withdrawing in place what w keeps (nil:
// nothing stays). It returns the generated names others hold; they are
// dropped when a write failed (the error is what the policy reports then).
func (r *AccessPolicyReconciler) enforce(ctx context.Context, p *itmv1.AccessPolicy, have, want generatedObjects, w *access.Withdrawal) ([]string, error) {
	var taken []string
	var errs []error
	collect := func(t []string, e []error) {
		taken = append(taken, t...)
		errs = append(errs, e...)
	}
	collect(r.nps.Apply(ctx, p, want.nps, have.nps))
	collect(r.crbs.Apply(ctx, p, want.crbs, have.crbs))
	collect(r.rbs.Apply(ctx, p, want.rbs, have.rbs))
	var keepNP func(*networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, bool)
	var keepCRB func(*rbacv1.ClusterRoleBinding) (*rbacv1.ClusterRoleBinding, bool)
	var keepRB func(*rbacv1.RoleBinding) (*rbacv1.RoleBinding, bool)
	if w != nil {
		keepNP, keepCRB, keepRB = w.NetworkPolicy, w.ClusterRoleBinding, w.RoleBinding
	}
	errs = append(errs, r.nps.Prune(ctx, p, want.nps, have.nps, keepNP)...)
	errs = append(errs, r.crbs.Prune(ctx, p, want.crbs, have.crbs, keepCRB)...)
	errs = append(errs, r.rbs.Prune(ctx, p, want.rbs, have.rbs, keepRB)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return taken, nil
}

// report summarises the outcome into the status, sends the events its
// Ready change is news for, and writes the status once.
func (r *AccessPolicyReconciler) report(ctx context.Context, base, p *itmv1.AccessPolicy, now time.Time, o access.Outcome) error {
	s, observed := access.Ready(o)
	gen := &p.Status.ObservedGeneration
	if !observed {
		gen = nil
	}
	kit.Summarize(&p.Status.Conditions, gen, p.Generation, now, s)
	kit.Emitter{Recorder: r.Recorder}.Changes(p, base.Status.Conditions, p.Status.Conditions,
		kit.Watch{Type: itmv1.ConditionReady, Good: metav1.ConditionTrue, Action: accessEventAction})
	_, err := r.status.Write(ctx, base, p)
	return err
}

func (r *AccessPolicyReconciler) config() access.Config {
	return access.Config{
		OperatorNamespace: r.OperatorNamespace, DevicesNamespace: r.DevicesNamespace, UpgradesNamespace: r.upgradesNamespace(),
		BindableRoles: r.BindableRoles, ClusterWideRoles: r.clusterWideRoles(),
	}
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

func count32(n int) int32 {
	if n > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(n) //nolint:gosec // bounded just above
}

// SetupWithManager builds the status writer and the owned-object syncers,
// and watches AccessPolicies, what they generate, and everything
// resolution reads, mapping each event only to the policies it can
// concern.
func (r *AccessPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.status = kit.Status{Client: r.Client, FieldManager: AccessFieldManager}
	var err error
	if r.claims, err = index.ClaimsOf(context.Background(), mgr.GetCache()); err != nil {
		return err
	}
	cfg := owned.Config{
		Client: r.Client, APIReader: r.APIReader, FieldManager: AccessFieldManager, OwnerLabel: netpol.LabelAccessPolicy,
		Owner: schema.GroupKind{Group: itmv1.GroupVersion.Group, Kind: "AccessPolicy"}, OwnerNoun: "policy",
	}
	r.nps = owned.New(owned.NetworkPolicies, cfg)
	r.crbs = owned.New(owned.ClusterRoleBindings, cfg)
	r.rbs = owned.New(owned.RoleBindings, cfg)
	// The status memo is keyed by UID, which a NotFound no longer tells.
	forgetStatus := r.status.ForgetOnDelete()
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("accesspolicy").
		For(&itmv1.AccessPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{}, forgetStatus)).
		Owns(&networkingv1.NetworkPolicy{}, builder.WithPredicates(r.nps.Echoes().NotEcho())).
		Owns(&rbacv1.ClusterRoleBinding{}, builder.WithPredicates(r.crbs.Echoes().NotEcho())).
		Owns(&rbacv1.RoleBinding{}, builder.WithPredicates(r.rbs.Echoes().NotEcho())).
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
