package news

import (
	"fmt"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// capture records events as "Type Reason Action: note".
type capture struct{ got []string }

func (c *capture) Eventf(_, _ runtime.Object, eventtype, reason, action, note string, args ...any) {
	c.got = append(c.got, fmt.Sprintf("%s %s %s: %s", eventtype, reason, action, fmt.Sprintf(note, args...)))
}

func (c *capture) AnnotatedEventf(o, r runtime.Object, _ map[string]string, eventtype, reason, action, note string, args ...any) {
	c.Eventf(o, r, eventtype, reason, action, note, args...)
}

func cond(t string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
}

func status(phase itmv1.DevicePhase, conds ...metav1.Condition) itmv1.DeviceStatus {
	return itmv1.DeviceStatus{Phase: phase, Conditions: conds}
}

var (
	fresh    = cond(itmv1.DeviceConditionCheckedIn, "True", itmv1.ReasonCheckInFresh, "checked in within 5m0s")
	stale    = cond(itmv1.DeviceConditionCheckedIn, "False", itmv1.ReasonCheckInStale, "last check-in X is older than 5m0s")
	never    = cond(itmv1.DeviceConditionCheckedIn, "False", itmv1.ReasonNeverCheckedIn, "no check-in has been received")
	matches  = cond(itmv1.DeviceConditionUpToDate, "True", itmv1.ReasonVersionMatches, "runs target version 2")
	differs  = cond(itmv1.DeviceConditionUpToDate, "False", itmv1.ReasonVersionDiffers, "runs 1; target is 2")
	unknown  = cond(itmv1.DeviceConditionUpToDate, "False", itmv1.ReasonVersionUnknown, "observed OS version is unknown; target is 2")
	readyOK  = cond(itmv1.ConditionReady, "True", itmv1.ReasonDeviceCheckedIn, "the device checks in")
	waiting  = cond(itmv1.ConditionReady, "False", itmv1.ReasonAwaitingCheckIn, "the device has not checked in recently")
	clashA   = cond(itmv1.ConditionReady, "False", itmv1.ReasonAddressConflict, "10.0.0.1 (also claimed by a)")
	clashAB  = cond(itmv1.ConditionReady, "False", itmv1.ReasonAddressConflict, "10.0.0.1 (also claimed by a, b)")
	resolved = "Normal AddressConflictResolved Addresses: no other Device claims this device's addresses any more"
)

// The events are those the Device controller sent before it used the kit:
// the same types, reasons, actions and notes, in the same order.
func TestEventsOfADeviceStatusChange(t *testing.T) {
	cases := []struct {
		name          string
		before, after itmv1.DeviceStatus
		want          []string
	}{
		{"first status: nothing is news", status(""), status(itmv1.DevicePhaseAvailable, never, unknown, waiting), nil},
		{"first status with a conflict", status(""), status(itmv1.DevicePhaseAvailable, never, unknown, clashA),
			[]string{"Warning AddressConflict Addresses: 10.0.0.1 (also claimed by a)"}},
		{"first check-in is not news", status("Available", never, matches, waiting), status("Available", fresh, matches, readyOK), nil},
		{"going stale", status("Available", fresh, matches, readyOK), status("Available", stale, matches, waiting),
			[]string{"Warning CheckInStale CheckIn: last check-in X is older than 5m0s"}},
		{"checking in again", status("Available", stale, matches, waiting), status("Available", fresh, matches, readyOK),
			[]string{"Normal CheckedInAgain CheckIn: the device checks in again"}},
		{"a message change alone is not news", status("Available", fresh, differs, readyOK),
			status("Available", fresh, cond(itmv1.DeviceConditionUpToDate, "False", itmv1.ReasonVersionDiffers, "runs 1.1; target is 2"), readyOK), nil},
		{"version reaches the target", status("Available", fresh, differs, readyOK), status("Available", fresh, matches, readyOK),
			[]string{"Normal VersionMatches Version: runs target version 2"}},
		{"version leaves the target", status("Available", fresh, matches, readyOK), status("Available", fresh, differs, readyOK),
			[]string{"Warning VersionDiffers Version: runs 1; target is 2"}},
		{"first reported version is not news", status("Available", fresh, unknown, readyOK), status("Available", fresh, differs, readyOK), nil},
		{"version becoming unknown is not news", status("Available", fresh, matches, readyOK), status("Available", fresh, unknown, readyOK), nil},
		{"conflict appears", status("Available", fresh, matches, readyOK), status("Available", fresh, matches, clashA),
			[]string{"Warning AddressConflict Addresses: 10.0.0.1 (also claimed by a)"}},
		{"conflict unchanged", status("Available", fresh, matches, clashA), status("Available", fresh, matches, clashA), nil},
		{"conflict with another claimant", status("Available", fresh, matches, clashA), status("Available", fresh, matches, clashAB),
			[]string{"Warning AddressConflict Addresses: 10.0.0.1 (also claimed by a, b)"}},
		{"conflict clears to Ready", status("Available", fresh, matches, clashA), status("Available", fresh, matches, readyOK),
			[]string{resolved}},
		{"conflict clears to another problem", status("Available", stale, matches, clashA), status("Available", stale, matches, waiting),
			[]string{resolved}},
		{"Ready changes for another reason: not news", status("Available", fresh, matches, readyOK), status("Available", stale, matches, waiting),
			[]string{"Warning CheckInStale CheckIn: last check-in X is older than 5m0s"}},
		{"phase change", status("Available", fresh, matches, readyOK), status("Assigned", fresh, matches, readyOK),
			[]string{"Normal Assigned Phase: phase changed from Available to Assigned"}},
		{"everything at once, in order", status("Assigned", fresh, matches, readyOK), status("Retired", stale, differs, clashA),
			[]string{"Warning CheckInStale CheckIn: last check-in X is older than 5m0s", "Warning VersionDiffers Version: runs 1; target is 2",
				"Warning AddressConflict Addresses: 10.0.0.1 (also claimed by a)", "Normal Retired Phase: phase changed from Assigned to Retired"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &capture{}
			was, is := Of(&c.before, &c.after)
			n := kit.Emitter{Recorder: rec}.Changes(&itmv1.Device{}, was, is, Watches...)
			if !slices.Equal(rec.got, c.want) || n != len(c.want) {
				t.Fatalf("events (%d):\n%q\nwant:\n%q", n, rec.got, c.want)
			}
		})
	}
}
