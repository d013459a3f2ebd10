package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

// conditions sets the window's conditions from the plan and what acting on
// it did, and sends WindowOpened/WindowClosed when the window's state
// changed since base. Ready, Reconciling and Stalled come from one
// kit.Summarize: Reconciling while devices upgrade inside an open window.
func (r *MaintenanceWindowReconciler) conditions(mw, base *itmv1.MaintenanceWindow, plan rollout.Plan, in rollout.Input, blockedBy string, now time.Time, err error) {
	conds, gen := &mw.Status.Conditions, mw.Generation
	switch {
	case in.Open:
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionTrue, itmv1.ReasonWindowOpen,
			"open until "+in.WindowEnd.UTC().Format(time.RFC3339))
	case in.Blackout:
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionFalse, itmv1.ReasonBlackout, "a blackout holds")
	default:
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionFalse, itmv1.ReasonOutsideWindow, blockedBy)
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
	upgrading := plan.Counts.InProgress > 0
	if upgrading {
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionProgressing, metav1.ConditionTrue, itmv1.MaintenanceReasonUpgrading,
			fmt.Sprintf("%d in progress (maxUnavailable %d), %d pending", plan.Counts.InProgress, plan.MaxUnavailable, plan.Counts.Pending))
	} else {
		reason := itmv1.ReasonRolloutComplete
		if plan.Reason != "" {
			reason = plan.Reason
		}
		msg := blockedBy
		if msg == "" {
			msg = "nothing to upgrade"
		}
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionProgressing, metav1.ConditionFalse, reason, msg)
	}
	if plan.Reason == itmv1.ReasonFailureBudget || blockedBy != "" && plan.Reason == "" && upgrading {
		reason := plan.Reason
		if reason == "" {
			reason = itmv1.ReasonDrainBlocked
		}
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionDegraded, metav1.ConditionTrue, reason, blockedBy)
	} else {
		kit.Set(conds, gen, now, itmv1.MaintenanceConditionDegraded, metav1.ConditionFalse, itmv1.MaintenanceReasonAsExpected, "no failure budget exhausted, no drain blocked")
	}
	s := kit.Summary{Ready: true, Reason: itmv1.ReasonReconciled, Message: "schedule valid; rollout reconciled",
		Reconciling: upgrading && in.Open, ReconcilingReason: itmv1.MaintenanceReasonUpgrading}
	observed := &mw.Status.ObservedGeneration
	if err != nil {
		s.Ready, s.Reason, s.Message = false, itmv1.MaintenanceReasonApplyFailed, err.Error()
		observed = nil // observedGeneration only after a reconcile that succeeded
	}
	kit.Summarize(conds, observed, gen, now, s)
}
