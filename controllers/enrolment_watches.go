package controllers

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
)

// SetupWithManager watches Devices and the Leases and (metadata of the)
// Secrets they own, and the creation and deletion of an enrolment-named
// Secret someone else made: its deletion lets a Device whose enrolment it
// blocked (Stalled) enrol at once, with no change to the Device.
func (r *EnrolmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("enrolment").
		For(&itmv1.Device{}, builder.WithPredicates(agentSpecChanged())).
		Owns(&coordinationv1.Lease{}, builder.WithPredicates(tokenHashChanged())).
		Owns(&corev1.Secret{}, builder.OnlyMetadata).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.foreignSecretDevice),
			builder.OnlyMetadata, builder.WithPredicates(createOrDelete())).
		Complete(r)
}

// foreignSecretDevice maps an enrolment-named Secret in the devices'
// namespace that no Device controls to the Device of that name (the ones a
// Device controls come through Owns).
func (r *EnrolmentReconciler) foreignSecretDevice(_ context.Context, o client.Object) []reconcile.Request {
	if metav1.GetControllerOf(o) != nil {
		return nil
	}
	return enrolmentSecretDevice(r.DevicesNamespace, o)
}

// createOrDelete passes the creation and deletion of an object and a
// change of its managed-by label (what decides whose it is).
func createOrDelete() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetLabels()[itmv1.LabelManagedBy] != e.ObjectNew.GetLabels()[itmv1.LabelManagedBy]
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func agentSpecChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		return !equality.Semantic.DeepEqual(o.Spec.Agent, n.Spec.Agent) || n.DeletionTimestamp != nil
	}}
}

// tokenHashChanged ignores renewals: only enrolment state matters here.
func tokenHashChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetAnnotations()[checkin.AnnotationTokenHash] != e.ObjectNew.GetAnnotations()[checkin.AnnotationTokenHash]
	}}
}
