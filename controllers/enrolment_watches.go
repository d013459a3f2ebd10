package controllers

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
)

// SetupWithManager watches Devices and the Leases and (metadata of the)
// Secrets they own.
func (r *EnrolmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("enrolment").
		For(&itmv1.Device{}, builder.WithPredicates(agentSpecChanged())).
		Owns(&coordinationv1.Lease{}, builder.WithPredicates(tokenHashChanged())).
		Owns(&corev1.Secret{}, builder.OnlyMetadata).
		Complete(r)
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
