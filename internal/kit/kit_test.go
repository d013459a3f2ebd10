package kit

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)

func TestSummarizeSetsReadyAndOnlyTheAbnormalConditionsThatHold(t *testing.T) {
	cases := []struct {
		name                   string
		s                      Summary
		ready                  metav1.ConditionStatus
		reason                 string
		reconciling, stalled   bool
		reconcilingR, stalledR string
	}{
		{"ready", Summary{Ready: true, Reason: "Active", Message: "ok"}, metav1.ConditionTrue, "Active", false, false, "", ""},
		{"default reason", Summary{Ready: true}, metav1.ConditionTrue, itmv1.ReasonReconciled, false, false, "", ""},
		{"in progress", Summary{Reason: "Provisioning", Reconciling: true}, metav1.ConditionFalse, "Provisioning", true, false, "Provisioning", ""},
		{"stalled with own reason", Summary{Reason: "Failed", Stalled: true, StalledReason: "NeedsAttention"}, metav1.ConditionFalse, "Failed", false, true, "", "NeedsAttention"},
		{"reconciling with own reason", Summary{Reason: "Rolling", Reconciling: true, ReconcilingReason: "Progressing"}, metav1.ConditionFalse, "Rolling", true, false, "Progressing", ""},
		{"stalled and reconciling at once: only Stalled (kstatus reads the first of the two in the list)", Summary{Reason: "Failed", Stalled: true, Reconciling: true}, metav1.ConditionFalse, "Failed", false, true, "", "Failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Start from the opposite abnormal conditions, to see them go.
			var conds []metav1.Condition
			Set(&conds, 1, t0, itmv1.ConditionReconciling, metav1.ConditionTrue, "Old", "")
			Set(&conds, 1, t0, itmv1.ConditionStalled, metav1.ConditionTrue, "Old", "")
			var observed int64
			Summarize(&conds, &observed, 7, t0, c.s)
			if observed != 7 {
				t.Errorf("observedGeneration %d, want 7", observed)
			}
			r := meta.FindStatusCondition(conds, itmv1.ConditionReady)
			if r == nil || r.Status != c.ready || r.Reason != c.reason || r.ObservedGeneration != 7 {
				t.Fatalf("Ready = %+v, want %s/%s at generation 7", r, c.ready, c.reason)
			}
			for _, ab := range []struct {
				t      string
				want   bool
				reason string
			}{{itmv1.ConditionReconciling, c.reconciling, c.reconcilingR}, {itmv1.ConditionStalled, c.stalled, c.stalledR}} {
				got := meta.FindStatusCondition(conds, ab.t)
				if !ab.want {
					if got != nil {
						t.Errorf("%s present (%+v), want absent", ab.t, got)
					}
					continue
				}
				if got == nil || got.Status != metav1.ConditionTrue || got.Reason != ab.reason {
					t.Errorf("%s = %+v, want True/%s", ab.t, got, ab.reason)
				}
			}
		})
	}
}

func TestSetMovesTransitionTimeOnlyWhenStatusChanges(t *testing.T) {
	var conds []metav1.Condition
	SetBool(&conds, 1, t0, "X", true, "A", "a")
	SetBool(&conds, 2, t0.Add(time.Hour), "X", true, "B", "b")
	if c := meta.FindStatusCondition(conds, "X"); !c.LastTransitionTime.Time.Equal(t0) || c.Reason != "B" || c.ObservedGeneration != 2 {
		t.Fatalf("same status: %+v, want transition time kept, reason and generation updated", c)
	}
	SetBool(&conds, 2, t0.Add(2*time.Hour), "X", false, "C", "c")
	if c := meta.FindStatusCondition(conds, "X"); !c.LastTransitionTime.Time.Equal(t0.Add(2 * time.Hour)) {
		t.Fatalf("status change: transition time %v, want %v", c.LastTransitionTime, t0.Add(2*time.Hour))
	}
}

func TestSetBoundsTheMessageToTheAPILimit(t *testing.T) {
	var conds []metav1.Condition
	long := make([]byte, MaxConditionMessage+100)
	for i := range long {
		long[i] = 'x'
	}
	SetBool(&conds, 1, t0, "X", true, "A", string(long))
	if n := len(conds[0].Message); n > MaxConditionMessage {
		t.Fatalf("message %d bytes, limit %d", n, MaxConditionMessage)
	}
}

func TestMergeTakesTheEarliestRequeueAndTheHighestPriority(t *testing.T) {
	cases := []struct {
		name string
		in   []ctrl.Result
		want ctrl.Result
	}{
		{"nothing", []ctrl.Result{{}, {}}, ctrl.Result{}},
		{"earliest", []ctrl.Result{{RequeueAfter: time.Minute}, {RequeueAfter: time.Second}, {}}, ctrl.Result{RequeueAfter: time.Second}},
		{"floor", []ctrl.Result{{RequeueAfter: time.Microsecond}}, ctrl.Result{RequeueAfter: MinRequeue}},
		{"priority kept", []ctrl.Result{{RequeueAfter: time.Minute, Priority: ptr.To(FreshnessPriority)}, {RequeueAfter: time.Second}}, ctrl.Result{RequeueAfter: time.Second, Priority: ptr.To(FreshnessPriority)}},
		{"the higher of two priorities", []ctrl.Result{{RequeueAfter: time.Minute, Priority: ptr.To(1)}, {RequeueAfter: time.Hour, Priority: ptr.To(5)}}, ctrl.Result{RequeueAfter: time.Minute, Priority: ptr.To(5)}},
		{"priority of a part that asked nothing ignored", []ctrl.Result{{Priority: ptr.To(5)}, {RequeueAfter: time.Second}}, ctrl.Result{RequeueAfter: time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Merge(c.in...)
			if got.RequeueAfter != c.want.RequeueAfter || ptr.Deref(got.Priority, -1) != ptr.Deref(c.want.Priority, -1) {
				t.Fatalf("Merge = %+v (priority %v), want %+v (priority %v)", got, ptr.Deref(got.Priority, -1), c.want, ptr.Deref(c.want.Priority, -1))
			}
		})
	}
}

func TestAtFloorsAPassedBoundaryAndIgnoresNone(t *testing.T) {
	if r := At(t0, time.Time{}); r.RequeueAfter != 0 {
		t.Errorf("zero time: %v, want no requeue", r.RequeueAfter)
	}
	if r := At(t0, t0.Add(-time.Hour)); r.RequeueAfter != MinRequeue {
		t.Errorf("passed boundary: %v, want %v", r.RequeueAfter, MinRequeue)
	}
	if r := At(t0, t0.Add(time.Hour)); r.RequeueAfter != time.Hour {
		t.Errorf("future boundary: %v, want 1h", r.RequeueAfter)
	}
	if r := After(-time.Second); r.RequeueAfter != 0 {
		t.Errorf("After(negative) = %v, want none", r.RequeueAfter)
	}
	if r := Urgent(After(time.Second)); ptr.Deref(r.Priority, 0) != FreshnessPriority {
		t.Errorf("Urgent priority %v", r.Priority)
	}
}

func TestChangesEmitsOnStatusOrReasonChangeOnly(t *testing.T) {
	cond := func(t string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
	}
	w := Watch{Type: "CheckedIn", Good: metav1.ConditionTrue, Action: "CheckIn", Recovered: "CheckedInAgain", Quiet: true}
	cases := []struct {
		name          string
		before, after []metav1.Condition
		want          int
	}{
		{"absent after", nil, nil, 0},
		{"first appears good, quiet", nil, []metav1.Condition{cond("CheckedIn", "True", "Fresh", "")}, 0},
		{"first appears bad", nil, []metav1.Condition{cond("CheckedIn", "False", "Stale", "")}, 1},
		{"message only", []metav1.Condition{cond("CheckedIn", "False", "Stale", "a")}, []metav1.Condition{cond("CheckedIn", "False", "Stale", "b")}, 0},
		{"reason change", []metav1.Condition{cond("CheckedIn", "False", "Never", "")}, []metav1.Condition{cond("CheckedIn", "False", "Stale", "")}, 1},
		{"recovered", []metav1.Condition{cond("CheckedIn", "False", "Stale", "")}, []metav1.Condition{cond("CheckedIn", "True", "Fresh", "")}, 1},
		{"unwatched type", nil, []metav1.Condition{cond("Other", "False", "X", "")}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := (Emitter{}).Changes(nil, c.before, c.after, w); got != c.want {
				t.Fatalf("Changes = %d, want %d", got, c.want)
			}
		})
	}
}

func TestMemoIsPendingOnlyForTheSameContentOverTheSameVersion(t *testing.T) {
	var m Memo
	if m.Pending("o", "k", "1", "a") {
		t.Fatal("empty memo pending")
	}
	m.Wrote("o", "k", "1", "a")
	if !m.Pending("o", "k", "1", "a") {
		t.Fatal("own write not pending while the cache still shows version 1")
	}
	if m.Pending("o", "k", "2", "a") {
		t.Fatal("pending after the cache moved on")
	}
	if m.Pending("o", "k", "1", "b") {
		t.Fatal("pending for other content")
	}
	m.ForgetOwner("o")
	if m.Pending("o", "k", "1", "a") {
		t.Fatal("pending after ForgetOwner")
	}
}

func TestForgetOnDeleteDropsTheDeletedObjectsMemoOnly(t *testing.T) {
	var w Status
	gone, kept := &corev1.ConfigMap{}, &corev1.ConfigMap{}
	gone.UID, kept.UID = "gone", "kept"
	w.memo.Wrote("gone", statusKey, "1", "a")
	w.memo.Wrote("kept", statusKey, "1", "a")
	if !w.ForgetOnDelete().Delete(event.DeleteEvent{Object: gone}) {
		t.Fatal("the delete event was filtered out")
	}
	if w.memo.Pending("gone", statusKey, "1", "a") {
		t.Error("the deleted object's memo is kept")
	}
	if !w.memo.Pending("kept", statusKey, "1", "a") {
		t.Error("another object's memo was dropped")
	}
}
