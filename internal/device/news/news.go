// Package news decides which changes of a Device's status are Events a
// person would act on, as conditions and watches for kit.Emitter.Changes.
package news

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// The news a Device's status change carries: a device that stopped
// checking in or came back, an OS version that changed between known
// versions, an address conflict appearing, changing or clearing, a phase
// change. A device's first check-in and first reported version are not
// news: at fleet scale they would flood the API server with events.

// Condition types of the news (never written to a status).
const (
	newsAddresses = "Addresses"
	newsPhase     = "Phase"
	// newsNoConflict is the reason of the Addresses news while no address
	// is in conflict (never an event's reason: a return to it is
	// ReasonAddressConflictResolved).
	newsNoConflict = "NoConflict"
)

// Watches are the kit.Watch entries for Of, in the order the events
// go out.
var Watches = []kit.Watch{
	{Type: itmv1.DeviceConditionCheckedIn, Good: metav1.ConditionTrue, Action: "CheckIn", Recovered: itmv1.ReasonCheckedInAgain},
	{Type: itmv1.DeviceConditionUpToDate, Good: metav1.ConditionTrue, Action: "Version"},
	{Type: newsAddresses, Good: metav1.ConditionTrue, Action: "Addresses", Recovered: itmv1.ReasonAddressConflictResolved, Quiet: true},
	{Type: newsPhase, Good: metav1.ConditionTrue, Action: "Phase", Quiet: true},
}

// Of turns a Device's status before and after a write into the condition
// lists whose changes, under Watches, are the events to send.
func Of(before, after *itmv1.DeviceStatus) (was, is []metav1.Condition) {
	// CheckedIn and UpToDate: only a change between two known states, none
	// from or to the quiet reason (never checked in, version unknown).
	known := func(t, quiet, recovered string) {
		old := meta.FindStatusCondition(before.Conditions, t)
		cur := meta.FindStatusCondition(after.Conditions, t)
		if old == nil || cur == nil || old.Reason == quiet || cur.Reason == quiet {
			return
		}
		c := *cur
		if recovered != "" && c.Status == metav1.ConditionTrue {
			c.Message = recovered
		}
		was, is = append(was, *old), append(is, c)
	}
	known(itmv1.DeviceConditionCheckedIn, itmv1.ReasonNeverCheckedIn, "the device checks in again")
	known(itmv1.DeviceConditionUpToDate, itmv1.ReasonVersionUnknown, "")

	// Addresses: a conflict is news when it appears or its message (who
	// else claims what) changes, and when it clears.
	conflict := func(st *itmv1.DeviceStatus) (metav1.Condition, bool) {
		r := meta.FindStatusCondition(st.Conditions, itmv1.ConditionReady)
		if r == nil {
			return metav1.Condition{}, false
		}
		c := metav1.Condition{Type: newsAddresses, Status: metav1.ConditionTrue, Reason: newsNoConflict,
			Message: "no other Device claims this device's addresses any more"}
		if r.Reason == itmv1.ReasonAddressConflict {
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, itmv1.ReasonAddressConflict, r.Message
		}
		return c, true
	}
	if cur, ok := conflict(after); ok {
		if old, ok := conflict(before); ok {
			if old.Reason == itmv1.ReasonAddressConflict && cur.Reason == itmv1.ReasonAddressConflict && old.Message != cur.Message {
				// Another claimant: the same as a new conflict.
				old.Status, old.Reason = metav1.ConditionTrue, newsNoConflict
			}
			was = append(was, old)
		}
		is = append(is, cur)
	}

	// Phase: every change of a phase already known.
	if after.Phase != "" {
		if before.Phase != "" {
			was = append(was, metav1.Condition{Type: newsPhase, Status: metav1.ConditionTrue, Reason: string(before.Phase)})
		}
		is = append(is, metav1.Condition{Type: newsPhase, Status: metav1.ConditionTrue, Reason: string(after.Phase),
			Message: fmt.Sprintf("phase changed from %s to %s", before.Phase, after.Phase)})
	}
	return was, is
}
