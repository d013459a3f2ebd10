package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

// conditions writes the window's conditions as rollout.Summarize decides
// them, and sends WindowOpened/WindowClosed when the window's state changed
// since base. Ready, Reconciling and Stalled come from one kit.Summarize.
func (r *MaintenanceWindowReconciler) conditions(mw, base *itmv1.MaintenanceWindow, plan rollout.Plan, in rollout.Input, blockedBy string, now time.Time, err error) {
	conds, gen := &mw.Status.Conditions, mw.Generation
	c := rollout.Summarize(plan, in, blockedBy)
	for _, x := range []struct {
		t string
		c rollout.Condition
	}{
		{itmv1.MaintenanceConditionWindowOpen, c.WindowOpen},
		{itmv1.MaintenanceConditionProgressing, c.Progressing},
		{itmv1.MaintenanceConditionDegraded, c.Degraded},
	} {
		kit.Set(conds, gen, now, x.t, x.c.Status, x.c.Reason, x.c.Message)
	}
	if old := meta.FindStatusCondition(base.Status.Conditions, itmv1.MaintenanceConditionWindowOpen); old != nil && (old.Status == metav1.ConditionTrue) != in.Open {
		if in.Open {
			r.events().Eventf(mw, nil, corev1.EventTypeNormal, itmv1.MaintenanceEventWindowOpened, "Window",
				"open until %s; %d devices pending", in.WindowEnd.UTC().Format(time.RFC3339), plan.Counts.Pending)
		} else {
			r.events().Eventf(mw, nil, corev1.EventTypeNormal, itmv1.MaintenanceEventWindowClosed, "Window",
				"%d succeeded, %d failed, %d pending, %d in progress", plan.Counts.Succeeded, plan.Counts.Failed, plan.Counts.Pending, plan.Counts.InProgress)
		}
	}
	s := rollout.Ready(c, mw.Spec.Paused, err)
	observed := &mw.Status.ObservedGeneration
	if err != nil {
		observed = nil // observedGeneration only after a reconcile that succeeded
	}
	kit.Summarize(conds, observed, gen, now, s)
}
