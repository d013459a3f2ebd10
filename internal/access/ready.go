package access

import (
	"fmt"
	"strings"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// Outcome is what one reconcile of a policy found and did, as its Ready
// condition summarises it.
type Outcome struct {
	// Invalid is why the spec cannot be acted on (ParseSelectors).
	Invalid error
	// ApplyErr is why writing the generated objects failed.
	ApplyErr error
	// Forbidden and Refused are Plan's problems; Taken are the generated
	// names held by objects the policy did not create.
	Forbidden, Refused, Taken []string
	Audit                     bool
	Counts                    itmv1.DeviceCounts
}

// Ready summarises an outcome in the kstatus terms. An invalid spec stalls
// the policy until someone fixes it; a failed write is retried, so the
// policy is still reconciling. A policy enforced only in part (a forbidden
// destination, a refused role, a name someone else holds) is not Ready and
// is Stalled too: nothing itmanager retries changes it, only a person (the
// spec, the installation's bindable roles, the foreign object); the
// message lists every problem and the first kind of problem names the
// reason. observed says whether the generation counts as observed: not
// after a failed write (the result is not what was decided).
func Ready(o Outcome) (s kit.Summary, observed bool) {
	problems := append(append(append([]string{}, o.Forbidden...), o.Refused...), o.Taken...)
	switch {
	case o.Invalid != nil:
		return kit.Summary{Reason: itmv1.ReasonInvalidSpec, Message: o.Invalid.Error(), Stalled: true}, true
	case o.ApplyErr != nil:
		return kit.Summary{Reason: itmv1.ReasonApplyFailed, Message: o.ApplyErr.Error(), Reconciling: true}, false
	case len(problems) > 0:
		reason := itmv1.ReasonNameTaken
		switch {
		case len(o.Forbidden) > 0:
			reason = itmv1.ReasonForbiddenDestination
		case len(o.Refused) > 0:
			reason = itmv1.ReasonRoleNotAllowed
		}
		return kit.Summary{Reason: reason, Message: strings.Join(problems, "; "), Stalled: true}, true
	case o.Audit:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonAudited,
			Message: fmt.Sprintf("audit only: %d of %d devices would be allowed; nothing is written", o.Counts.Allowed, o.Counts.Matched)}, true
	case o.Counts.Allowed == 0:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonNoAllowedDevices,
			Message: "no device qualifies: the selected pods are isolated from device addresses"}, true
	default:
		return kit.Summary{Ready: true, Reason: itmv1.ReasonEnforced,
			Message: fmt.Sprintf("%d of %d devices allowed", o.Counts.Allowed, o.Counts.Matched)}, true
	}
}
