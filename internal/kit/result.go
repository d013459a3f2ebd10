package kit

import (
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
)

// MinRequeue is the one floor of every timed requeue: a decision whose next
// boundary is now (or already past, on a clock a little ahead) is looked at
// again this soon, never in a hot loop.
const MinRequeue = 10 * time.Millisecond

// FreshnessPriority is the workqueue priority of a reconcile that acts on
// a time boundary (a check-in going stale, a window opening): it goes
// before the bulk of reconciles a mass change starts, so a deadline is
// met while the queue is long.
const FreshnessPriority = 1

// After asks to be reconciled again after d, floored at MinRequeue; a d of
// zero or less asks for nothing (use At for a boundary that may have
// passed already).
func After(d time.Duration) ctrl.Result {
	if d <= 0 {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: max(d, MinRequeue)}
}

// At asks to be reconciled again at t, or soon (MinRequeue) when t has
// already passed; a zero t asks for nothing.
func At(now, t time.Time) ctrl.Result {
	if t.IsZero() {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: max(t.Sub(now), MinRequeue)}
}

// Urgent marks r as acting on a time boundary (FreshnessPriority).
func Urgent(r ctrl.Result) ctrl.Result {
	r.Priority = ptr.To(FreshnessPriority)
	return r
}

// Merge combines the requeue requests of one reconcile's parts: the
// earliest positive RequeueAfter wins, and the highest priority of the
// parts that asked for anything is kept.
func Merge(rs ...ctrl.Result) ctrl.Result {
	var out ctrl.Result
	for _, r := range rs {
		if r.RequeueAfter <= 0 {
			continue
		}
		if out.RequeueAfter == 0 || r.RequeueAfter < out.RequeueAfter {
			out.RequeueAfter = r.RequeueAfter
		}
		if r.Priority != nil && (out.Priority == nil || *r.Priority > *out.Priority) {
			out.Priority = ptr.To(*r.Priority)
		}
	}
	if out.RequeueAfter > 0 {
		out.RequeueAfter = max(out.RequeueAfter, MinRequeue)
	}
	return out
}
