package kit

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxEventMessage bounds an Event's note (the API allows 1 KiB).
const MaxEventMessage = 1024

// Watch names a condition whose changes are news a person would act on.
type Watch struct {
	// Type of the condition.
	Type string
	// Good is the status that is normal (True for Ready, CheckedIn,
	// UpToDate). A change to it is a Normal event, any other a Warning.
	Good metav1.ConditionStatus
	// Action is the event's action ("CheckIn", "Reconcile").
	Action string
	// Recovered, when set, is the reason of the event for a return to Good
	// (instead of the condition's own reason).
	Recovered string
	// Quiet suppresses the event when the condition first appears with the
	// Good status (a new object that is fine is not news).
	Quiet bool
}

// Emitter sends Events. The zero Emitter (nil Recorder) sends nothing, so
// controllers and tests need no recorder to run.
type Emitter struct {
	Recorder recorder.EventRecorder
}

// Event sends one event about obj (with related, if any), its note bounded.
func (e Emitter) Event(obj runtime.Object, related runtime.Object, eventType, reason, action, note string) {
	if e.Recorder == nil || obj == nil {
		return
	}
	e.Recorder.Eventf(obj, related, eventType, reason, action, "%s", text.Truncate(note, MaxEventMessage))
}

// Eventf is Event with a format.
func (e Emitter) Eventf(obj runtime.Object, related runtime.Object, eventType, reason, action, format string, args ...any) {
	if e.Recorder == nil {
		return
	}
	e.Event(obj, related, eventType, reason, action, fmt.Sprintf(format, args...))
}

// Changes sends one event per watched condition whose status or reason
// differs between before and after; a change of message alone is not news.
// It returns how many it sent (with a nil Recorder, how many it would
// have).
func (e Emitter) Changes(obj runtime.Object, before, after []metav1.Condition, watches ...Watch) int {
	n := 0
	for _, w := range watches {
		cur := meta.FindStatusCondition(after, w.Type)
		if cur == nil {
			continue
		}
		old := meta.FindStatusCondition(before, w.Type)
		if old != nil && old.Status == cur.Status && old.Reason == cur.Reason {
			continue
		}
		good := cur.Status == w.Good
		if old == nil && good && w.Quiet {
			continue
		}
		kind, reason := corev1.EventTypeWarning, cur.Reason
		if good {
			kind = corev1.EventTypeNormal
			if w.Recovered != "" && old != nil && old.Status != w.Good {
				reason = w.Recovered
			}
		}
		n++
		e.Event(obj, nil, kind, reason, w.Action, cur.Message)
	}
	return n
}
