package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/index"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/onboarding"
)

// SetupWithManager registers the controller: requests, the providers they
// use, and the devices they hold or wait for.
func (r *OnboardingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// As controller-runtime's default per-item backoff.
	r.retry = workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 1000*time.Second)
	r.writer = &kit.Status{Client: r.Client, FieldManager: OnboardingFieldManager}
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("onboarding").
		For(&itmv1.OnboardingRequest{}, builder.WithPredicates(requestChanged())).
		Watches(&itmv1.AccountProvider{}, handler.EnqueueRequestsFromMapFunc(r.providerToRequests),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, readyChanged()))).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(r.deviceToRequests),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Complete(r)
}

// requestChanged passes what a pass reads from the request itself: spec,
// annotations (force-offboard), deletion, the finalizer and an approver's
// decision. The controller's own status writes do not pass: re-running
// every provider call after each of them would change nothing.
func requestChanged() predicate.Predicate {
	decision := func(r *itmv1.OnboardingRequest) [2]metav1.ConditionStatus {
		var d [2]metav1.ConditionStatus
		for i, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
			if c := meta.FindStatusCondition(r.Status.Conditions, t); c != nil {
				d[i] = c.Status
			}
		}
		return d
	}
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.OnboardingRequest), e.ObjectNew.(*itmv1.OnboardingRequest)
		return o.Generation != n.Generation || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
			!equality.Semantic.DeepEqual(o.Annotations, n.Annotations) || decision(o) != decision(n) ||
			// A finalizer that went missing is put back at once.
			controllerutil.ContainsFinalizer(o, onboarding.Finalizer) != controllerutil.ContainsFinalizer(n, onboarding.Finalizer)
	}}
}

// readyChanged passes an AccountProvider whose Ready condition flipped: a
// provider that comes back unblocks the requests waiting for it.
func readyChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.AccountProvider), e.ObjectNew.(*itmv1.AccountProvider)
		return meta.IsStatusConditionTrue(o.Status.Conditions, itmv1.ConditionReady) != meta.IsStatusConditionTrue(n.Status.Conditions, itmv1.ConditionReady)
	}}
}

func (r *OnboardingReconciler) providerToRequests(ctx context.Context, o client.Object) []reconcile.Request {
	// Requests whose defaults are not fixed yet hear of every provider: one
	// that stops being default, or stops being too many, changes their set.
	p := o.(*itmv1.AccountProvider)
	return r.requestsByIndex(ctx, index.OnboardingProviderField, []string{p.Name, index.KeyDefaultProvider})
}

// deviceToRequests enqueues the request of the device's assignee, and every
// request still waiting for a device (inventory changed).
func (r *OnboardingReconciler) deviceToRequests(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	var out []reconcile.Request
	if d.Spec.Assignee != "" {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: d.Spec.Assignee}})
	}
	return append(out, r.requestsByIndex(ctx, index.OnboardingWaitingField, []string{"true"})...)
}

func (r *OnboardingReconciler) requestsByIndex(ctx context.Context, index string, keys []string) []reconcile.Request {
	var out []reconcile.Request
	for _, k := range keys {
		var list itmv1.OnboardingRequestList
		if err := r.List(ctx, &list, client.MatchingFields{index: k}, client.UnsafeDisableDeepCopy); err != nil {
			logf.FromContext(ctx).Error(err, "list OnboardingRequests", "index", index, "key", k)
			continue
		}
		for i := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return out
}
