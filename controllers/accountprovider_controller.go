package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
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
}

// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders/status,verbs=get;update;patch

// Reconcile checks one provider.
func (r *AccountProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &itmv1.AccountProvider{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	every := r.CheckEvery
	if every <= 0 {
		every = 5 * time.Minute
	}
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := checkProvider(checkCtx, r.Providers, p)
	now := r.Clock.Now()
	status := *p.Status.DeepCopy()
	status.ObservedGeneration = p.Generation
	wasReady := meta.IsStatusConditionTrue(status.Conditions, "Ready")
	transient := false
	if err == nil {
		status.Message = "connected"
		setCondition(&status.Conditions, p.Generation, now, "Ready", metav1.ConditionTrue, itmv1.AccountProviderReasonConnected, describeProvider(p))
	} else {
		reason := itmv1.AccountProviderReasonUnreachable
		transient = !accounts.IsConfig(err)
		if accounts.IsConfig(err) {
			reason = itmv1.AccountProviderReasonInvalidConfiguration
			if r := accounts.ConfigReason(err); r != "" {
				reason = r
			}
		}
		status.Message = text.Truncate(err.Error(), 1024)
		setCondition(&status.Conditions, p.Generation, now, "Ready", metav1.ConditionFalse, reason, err.Error())
	}
	if !equality.Semantic.DeepEqual(status, p.Status) {
		if err := applyStatus(ctx, r.Client, p, &status, ProviderFieldManager); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	}
	if ready := err == nil; ready != wasReady && r.Recorder != nil {
		if ready {
			r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "Connected", "Check", "%s", describeProvider(p))
		} else {
			r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "CheckFailed", "Check", "%s", text.Truncate(err.Error(), 1024))
		}
	}
	failingSince := meta.FindStatusCondition(status.Conditions, "Ready").LastTransitionTime.Time
	return ctrl.Result{RequeueAfter: accounts.Recheck(now, failingSince, transient, every)}, nil
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
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("accountprovider").
		For(&itmv1.AccountProvider{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}
