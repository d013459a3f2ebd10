package controllers

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

// SetupWithManager watches windows, the Devices they select (and the
// window a device's upgrade names), and the upgrade Jobs they own.
func (r *MaintenanceWindowReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.statusWriters()
	// The status memo is keyed by UID, which a NotFound no longer tells
	// (a window without the finalizer, an invalid one, goes at once).
	forgetStatus := r.windowStatus.ForgetOnDelete()
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("maintenancewindow").
		// A deletion bumps the generation too (deletionTimestamp set).
		For(&itmv1.MaintenanceWindow{}, builder.WithPredicates(forgetStatus, predicate.GenerationChangedPredicate{})).
		Owns(&batchv1.Job{}).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(r.deviceToWindows),
			builder.WithPredicates(r.forgetDeletedDevices(), deviceRolloutChanged())).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(claimToWindow), builder.WithPredicates(onCreate())).
		Complete(r)
}

// forgetDeletedDevices drops what this process remembers of its writes to
// a deleted Device (the upgrade writer's memo and the unseen claim, both
// keyed by UID), and passes the deletion on.
func (r *MaintenanceWindowReconciler) forgetDeletedDevices() predicate.Predicate {
	return predicate.Funcs{DeleteFunc: func(e event.DeleteEvent) bool {
		r.statusWriters().upgrades.Forget(e.Object)
		r.own.forget(e.Object.GetUID())
		return true
	}}
}

// deviceRolloutChanged passes what a rollout reads: labels, spec (target,
// lifecycle), observed version, CheckedIn, upgrade progress.
func deviceRolloutChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		ov, nv := "", ""
		if o.Status.Observed != nil {
			ov = o.Status.Observed.OSVersion
		}
		if n.Status.Observed != nil {
			nv = n.Status.Observed.OSVersion
		}
		return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Labels, n.Labels) || ov != nv ||
			rollout.CheckedIn(o) != rollout.CheckedIn(n) || !equality.Semantic.DeepEqual(o.Status.Upgrade, n.Status.Upgrade)
	}}
}

// deviceToWindows maps a Device to the windows that select it and the
// window its upgrade names.
func (r *MaintenanceWindowReconciler) deviceToWindows(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	list := &itmv1.MaintenanceWindowList{}
	if err := r.List(ctx, list); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, mw := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(&mw.Spec.Selector)
		claimed := d.Status.Upgrade != nil && d.Status.Upgrade.Window == mw.Name
		if claimed || (err == nil && sel.Matches(labels.Set(d.Labels))) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: mw.Name}})
		}
	}
	return out
}

// claimToWindow maps a Device this process sees for the first time (at
// its start) to the window its in-flight upgrade names, whether or not
// that window exists: a window deleted while no manager ran (or before it
// had the finalizer) left the claim, and only the Device leads back to it.
// Later changes do not map here: a claim naming a window not (yet) in the
// cache then is someone's doing, not a deletion this process missed.
func claimToWindow(_ context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	if u := d.Status.Upgrade; u != nil && u.Window != "" && rollout.Authorizes(u.State) {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: u.Window}}}
	}
	return nil
}

// onCreate passes only the first sight of an object.
func onCreate() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
