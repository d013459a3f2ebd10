package rollout

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestSummarizeDecidesTheWindowsConditions(t *testing.T) {
	end := time.Date(2026, 3, 29, 5, 0, 0, 0, time.UTC)
	open := Input{Open: true, WindowEnd: end}
	T, F := metav1.ConditionTrue, metav1.ConditionFalse
	asExpected := Condition{F, itmv1.MaintenanceReasonAsExpected, "no failure budget exhausted, no drain blocked"}
	cases := []struct {
		name                              string
		plan                              Plan
		in                                Input
		blockedBy                         string
		windowOpen, progressing, degraded Condition
		reconciling                       bool
	}{
		{"open, upgrading: Reconciling", Plan{Counts: itmv1.UpgradeCounts{InProgress: 2, Pending: 3}, MaxUnavailable: 2}, open, "",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{T, itmv1.MaintenanceReasonUpgrading, "2 in progress (maxUnavailable 2), 3 pending"}, asExpected, true},
		{"open, done", Plan{Counts: itmv1.UpgradeCounts{Succeeded: 5}}, open, "",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{F, itmv1.ReasonRolloutComplete, "nothing to upgrade"}, asExpected, false},
		{"closed, upgrades finishing: not Reconciling", Plan{Counts: itmv1.UpgradeCounts{InProgress: 1}, MaxUnavailable: 1, Reason: itmv1.ReasonOutsideWindow, BlockedBy: "outside window"},
			Input{}, "outside window",
			Condition{F, itmv1.ReasonOutsideWindow, "outside window"},
			Condition{T, itmv1.MaintenanceReasonUpgrading, "1 in progress (maxUnavailable 1), 0 pending"}, asExpected, false},
		{"blackout", Plan{Counts: itmv1.UpgradeCounts{Pending: 1}, Reason: itmv1.ReasonBlackout}, Input{Blackout: true}, "blackout",
			Condition{F, itmv1.ReasonBlackout, "a blackout holds"},
			Condition{F, itmv1.ReasonBlackout, "blackout"}, asExpected, false},
		{"paused", Plan{Counts: itmv1.UpgradeCounts{Pending: 2}, Reason: itmv1.ReasonPaused}, open, "paused",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{F, itmv1.ReasonPaused, "paused"}, asExpected, false},
		{"failure budget: Degraded", Plan{Counts: itmv1.UpgradeCounts{Pending: 2, Failed: 1}, Reason: itmv1.ReasonFailureBudget}, open, "failure budget: 1 failed",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{F, itmv1.ReasonFailureBudget, "failure budget: 1 failed"},
			Condition{T, itmv1.ReasonFailureBudget, "failure budget: 1 failed"}, false},
		{"drain blocked: Degraded", Plan{Counts: itmv1.UpgradeCounts{InProgress: 1}, MaxUnavailable: 1}, open, "pod a/b: eviction refused",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{T, itmv1.MaintenanceReasonUpgrading, "1 in progress (maxUnavailable 1), 0 pending"},
			Condition{T, itmv1.ReasonDrainBlocked, "pod a/b: eviction refused"}, true},
		// A drain blocks only an upgrade under way: a blocker with no plan
		// reason and nothing in progress degrades nothing.
		{"blocked without a reason, nothing upgrading: not Degraded, Progressing False with the blocker", Plan{Counts: itmv1.UpgradeCounts{Succeeded: 1}}, open, "pod a/b: eviction refused",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{F, itmv1.ReasonRolloutComplete, "pod a/b: eviction refused"}, asExpected, false},
		{"none checked in: not Degraded", Plan{Counts: itmv1.UpgradeCounts{Pending: 2}, Reason: itmv1.ReasonWindowOpen}, open, "2 devices pending, none checked in",
			Condition{T, itmv1.ReasonWindowOpen, "open until 2026-03-29T05:00:00Z"},
			Condition{F, itmv1.ReasonWindowOpen, "2 devices pending, none checked in"}, asExpected, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Summarize(c.plan, c.in, c.blockedBy)
			for _, x := range []struct {
				name      string
				got, want Condition
			}{{"WindowOpen", got.WindowOpen, c.windowOpen}, {"Progressing", got.Progressing, c.progressing}, {"Degraded", got.Degraded, c.degraded}} {
				if x.got != x.want {
					t.Errorf("%s = %+v, want %+v", x.name, x.got, x.want)
				}
			}
			if got.Reconciling != c.reconciling {
				t.Errorf("Reconciling = %t, want %t", got.Reconciling, c.reconciling)
			}
		})
	}
}

// TestReadyOfAWindow: the window's kstatus summary. A failed write is
// retried (Reconciling); an exhausted failure budget halts the rollout
// until someone looks (Stalled); a paused window is Ready (Argo CD shows it
// Suspended); upgrades under way in an open window are Reconciling.
func TestReadyOfAWindow(t *testing.T) {
	budget := Conditions{Degraded: Condition{metav1.ConditionTrue, itmv1.ReasonFailureBudget, "failure budget: 1 failed"}}
	cases := []struct {
		name                        string
		c                           Conditions
		paused                      bool
		err                         error
		ready, reconciling, stalled bool
		reason                      string
	}{
		{"idle", Conditions{}, false, nil, true, false, false, itmv1.ReasonReconciled},
		{"upgrading inside the window", Conditions{Reconciling: true}, false, nil, true, true, false, itmv1.ReasonReconciled},
		{"paused", Conditions{}, true, nil, true, false, false, itmv1.ReasonReconciled},
		{"a failed write is retried", Conditions{}, false, errors.New("apply: conflict"), false, true, false, itmv1.MaintenanceReasonApplyFailed},
		{"failure budget exhausted stalls", budget, false, nil, false, false, true, itmv1.ReasonFailureBudget},
		{"a drain blocked by a PDB is only Degraded, still Reconciling", Conditions{Reconciling: true,
			Degraded: Condition{metav1.ConditionTrue, itmv1.ReasonDrainBlocked, "pdb"}}, false, nil, true, true, false, itmv1.ReasonReconciled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := Ready(c.c, c.paused, c.err)
			if s.Ready != c.ready || s.Reconciling != c.reconciling || s.Stalled != c.stalled || s.Reason != c.reason {
				t.Fatalf("Ready = %+v, want ready %v reconciling %v stalled %v reason %s", s, c.ready, c.reconciling, c.stalled, c.reason)
			}
		})
	}
}
