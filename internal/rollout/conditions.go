package rollout

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// Condition is one condition's status, reason and message.
type Condition struct {
	Status          metav1.ConditionStatus
	Reason, Message string
}

// Conditions is what a window's status says about the plan: WindowOpen,
// Progressing and Degraded, and whether the window is Reconciling (kstatus:
// devices upgrade inside an open window).
type Conditions struct {
	WindowOpen, Progressing, Degraded Condition
	Reconciling                       bool
}

// Ready is the window's kstatus summary. The schedule is valid (an
// invalid one never gets here) and the rollout reconciled: Ready, and
// Reconciling while devices upgrade inside the open window. Not Ready:
//   - a write of the rollout's steps failed (applyErr): retried, so
//     Reconciling;
//   - the failure budget is exhausted: the rollout halts until someone
//     looks at the failed devices (or the next window), so Stalled.
//
// A paused window is Ready (Suspended in Argo CD's terms, by its
// health.lua): pausing is what was asked for.
func Ready(c Conditions, paused bool, applyErr error) kit.Summary {
	switch {
	case applyErr != nil:
		return kit.Summary{Reason: itmv1.MaintenanceReasonApplyFailed, Message: applyErr.Error(), Reconciling: true}
	case c.Degraded.Status == metav1.ConditionTrue && c.Degraded.Reason == itmv1.ReasonFailureBudget:
		return kit.Summary{Reason: itmv1.ReasonFailureBudget, Message: c.Degraded.Message, Stalled: true}
	}
	s := kit.Summary{Ready: true, Reason: itmv1.ReasonReconciled, Message: "schedule valid; rollout reconciled",
		Reconciling: c.Reconciling, ReconcilingReason: itmv1.MaintenanceReasonUpgrading}
	if paused {
		s.Message = "schedule valid; paused: no new upgrade starts"
	}
	return s
}

// Summarize decides the window's conditions from the plan, its input and
// what blocks it (the plan's BlockedBy, or a drain's blocker that
// overrides it).
func Summarize(p Plan, in Input, blockedBy string) Conditions {
	var c Conditions
	switch {
	case in.Open:
		c.WindowOpen = Condition{metav1.ConditionTrue, itmv1.ReasonWindowOpen, "open until " + in.WindowEnd.UTC().Format(time.RFC3339)}
	case in.Blackout:
		c.WindowOpen = Condition{metav1.ConditionFalse, itmv1.ReasonBlackout, "a blackout holds"}
	default:
		c.WindowOpen = Condition{metav1.ConditionFalse, itmv1.ReasonOutsideWindow, blockedBy}
	}
	upgrading := p.Counts.InProgress > 0
	if upgrading {
		c.Progressing = Condition{metav1.ConditionTrue, itmv1.MaintenanceReasonUpgrading,
			fmt.Sprintf("%d in progress (maxUnavailable %d), %d pending", p.Counts.InProgress, p.MaxUnavailable, p.Counts.Pending)}
	} else {
		reason := itmv1.ReasonRolloutComplete
		if p.Reason != "" {
			reason = p.Reason
		}
		msg := blockedBy
		if msg == "" {
			msg = "nothing to upgrade"
		}
		c.Progressing = Condition{metav1.ConditionFalse, reason, msg}
	}
	switch {
	case p.Reason == itmv1.ReasonFailureBudget:
		c.Degraded = Condition{metav1.ConditionTrue, p.Reason, blockedBy}
	case blockedBy != "" && p.Reason == "" && upgrading:
		c.Degraded = Condition{metav1.ConditionTrue, itmv1.ReasonDrainBlocked, blockedBy}
	default:
		c.Degraded = Condition{metav1.ConditionFalse, itmv1.MaintenanceReasonAsExpected, "no failure budget exhausted, no drain blocked"}
	}
	c.Reconciling = upgrading && in.Open
	return c
}
