package kit

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxConditionMessage is metav1.Condition's message limit.
const MaxConditionMessage = 32768

// Set sets one condition, bounding its message to the API's limit. Its
// lastTransitionTime moves only when its status changes.
func Set(conds *[]metav1.Condition, gen int64, now time.Time, t string, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason,
		Message: text.Truncate(msg, MaxConditionMessage), ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
}

// SetBool is Set with a boolean status.
func SetBool(conds *[]metav1.Condition, gen int64, now time.Time, t string, ok bool, reason, msg string) {
	Set(conds, gen, now, t, condStatus(ok), reason, msg)
}

func condStatus(ok bool) metav1.ConditionStatus {
	if ok {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// Summary is what a controller decided about an object as a whole, in the
// terms of the kstatus conventions (sigs.k8s.io/cli-utils/pkg/kstatus),
// which Argo CD, Flux and `kubectl wait --for=condition=Ready` read.
type Summary struct {
	// Ready: the object is reconciled and has no problem of itmanager's
	// making. Reason and Message say why (or why not).
	Ready   bool
	Reason  string
	Message string
	// Reconciling: work is under way that will finish without a human
	// (kstatus InProgress). ReconcilingReason defaults to Reason.
	Reconciling       bool
	ReconcilingReason string
	// Stalled: nothing more happens until someone changes the spec or
	// something it refers to (kstatus Failed). StalledReason defaults to
	// Reason.
	Stalled       bool
	StalledReason string
}

// Summarize writes s into conds as the Ready condition, with Reconciling
// and Stalled True while they hold and absent otherwise (kstatus treats
// both as abnormal-true conditions; Stalled wins over Reconciling), and
// records gen as the observed generation. It is the only place these three
// conditions are set.
func Summarize(conds *[]metav1.Condition, observedGeneration *int64, gen int64, now time.Time, s Summary) {
	reason := s.Reason
	if reason == "" {
		reason = itmv1.ReasonReconciled
	}
	SetBool(conds, gen, now, itmv1.ConditionReady, s.Ready, reason, s.Message)
	abnormal := func(t string, on bool, r string) {
		if !on {
			meta.RemoveStatusCondition(conds, t)
			return
		}
		if r == "" {
			r = reason
		}
		Set(conds, gen, now, t, metav1.ConditionTrue, r, s.Message)
	}
	// Never both: kstatus takes whichever of the two comes first in the
	// list, so both at once would read as InProgress or Failed by the
	// order of history. Stalled wins: retrying does not end it.
	abnormal(itmv1.ConditionReconciling, s.Reconciling && !s.Stalled, s.ReconcilingReason)
	abnormal(itmv1.ConditionStalled, s.Stalled, s.StalledReason)
	if observedGeneration != nil {
		*observedGeneration = gen
	}
}
