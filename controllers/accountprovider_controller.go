package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/text"
)

// ProviderFieldManager owns the status of AccountProviders.
const ProviderFieldManager = "itmanager-accountprovider"

// AccountProviderReconciler checks that each AccountProvider can be reached
// with its credentials (an LDAP bind and a read of usersDN; the Kubernetes
// provider's namespace, created when missing) and reports it in Ready,
// again every CheckEvery, and sooner while it cannot be reached
// (accounts.Recheck), so that its return is seen soon.
type AccountProviderReconciler struct {
	client.Client
	Providers  ProviderOpener
	Clock      clock.PassiveClock
	Recorder   recorder.EventRecorder
	CheckEvery time.Duration

	status     *kit.Status
	statusOnce sync.Once
}

// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders/status,verbs=get;update;patch

// Reconcile checks one provider.
func (r *AccountProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &itmv1.AccountProvider{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			forgetProvider(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	initProvider(p.Name)
	every := r.CheckEvery
	if every <= 0 {
		every = 5 * time.Minute
	}
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := checkProvider(checkCtx, r.Providers, p)
	now := r.Clock.Now()
	v := accounts.Judge(err, describeProvider(p))

	base := p.DeepCopy()
	wasReady := meta.IsStatusConditionTrue(p.Status.Conditions, itmv1.ConditionReady)
	p.Status.Message = v.StatusMessage
	kit.Summarize(&p.Status.Conditions, &p.Status.ObservedGeneration, p.Generation, now,
		kit.Summary{Ready: v.Ready, Reason: v.Reason, Message: v.Message, Stalled: v.Stalled, Reconciling: v.Transient})
	if _, werr := r.writer().Write(ctx, base, p); werr != nil && !apierrors.IsNotFound(werr) {
		return ctrl.Result{}, werr
	}
	ev := kit.Emitter{Recorder: r.Recorder}
	switch {
	case v.Ready && !wasReady:
		ev.Event(p, nil, corev1.EventTypeNormal, itmv1.AccountProviderReasonConnected, "Check", describeProvider(p))
	case !v.Ready && wasReady:
		ev.Event(p, nil, corev1.EventTypeWarning, itmv1.AccountProviderEventCheckFailed, "Check", text.Truncate(err.Error(), accounts.MaxStatusMessage))
	}
	failingSince := meta.FindStatusCondition(p.Status.Conditions, itmv1.ConditionReady).LastTransitionTime.Time
	return kit.After(accounts.Recheck(now, failingSince, v.Transient, every)), nil
}

// writer is the controller's one status writer (the status is the
// operator's alone: server-side apply).
func (r *AccountProviderReconciler) writer() *kit.Status {
	r.statusOnce.Do(func() { r.status = &kit.Status{Client: r.Client, FieldManager: ProviderFieldManager} })
	return r.status
}

func checkProvider(ctx context.Context, opener ProviderOpener, p *itmv1.AccountProvider) error {
	prov, err := opener.Open(ctx, p)
	if err != nil {
		return err
	}
	defer func() { _ = prov.Close() }()
	return prov.Check(ctx)
}

func describeProvider(p *itmv1.AccountProvider) string {
	switch {
	case p.Spec.Kubernetes != nil:
		return "ServiceAccounts in namespace " + kubernetesNamespace(p)
	case p.Spec.LDAP != nil:
		return "bound to " + p.Spec.LDAP.URL + " as " + p.Spec.LDAP.BindDN + "; " + p.Spec.LDAP.UsersDN + " readable"
	}
	return string(p.Spec.Type)
}

// SetupWithManager registers the controller.
func (r *AccountProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// The status memo is keyed by UID, which a NotFound no longer tells.
	forgetStatus := r.writer().ForgetOnDelete()
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("accountprovider").
		For(&itmv1.AccountProvider{}, builder.WithPredicates(forgetStatus, predicate.GenerationChangedPredicate{})).
		Complete(r)
}
