package access

import (
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
)

// ReportOnly reports whether a Device update changed nothing but facts it
// reported (status), and not the addresses it claims: which policies select
// it, its check-in Lease and the address conflicts of other devices stay as
// they were, so only its own verdicts can change (VerdictChanged).
func ReportOnly(old, cur *itmv1.Device) bool {
	return old.Generation == cur.Generation && old.DeletionTimestamp.Equal(cur.DeletionTimestamp) &&
		equality.Semantic.DeepEqual(old.Labels, cur.Labels) &&
		equality.Semantic.DeepEqual(old.OwnerReferences, cur.OwnerReferences) &&
		equality.Semantic.DeepEqual(old.Spec, cur.Spec) &&
		slices.Equal(observedAddresses(old), observedAddresses(cur))
}

func observedAddresses(d *itmv1.Device) []string {
	if d.Status.Observed == nil {
		return nil
	}
	out := slices.Clone(d.Status.Observed.Addresses)
	slices.Sort(out)
	return slices.Compact(out)
}

// VerdictChanged reports whether a policy with posture p decides a device
// differently before (old) and after (cur) a ReportOnly update, judged with
// the same check-in, conflicts and clock: whether it is allowed, its
// addresses, why it is denied and when its access expires, which is all a
// policy's resolution takes from a verdict. When it is false, resolving the
// policy again gives exactly what it gave before, and the update needs no
// reconcile of that policy.
func VerdictChanged(old, cur Candidate, p *itmv1.Posture, now time.Time) bool {
	a, b := Evaluate(old, p, now), Evaluate(cur, p, now)
	return a.Allowed != b.Allowed || !slices.Equal(a.Reasons, b.Reasons) ||
		!slices.Equal(a.Addresses, b.Addresses) || !a.Posture.ExpiresAt.Equal(b.Posture.ExpiresAt)
}

// CheckInFlips reports whether a check-in (a Lease renewal) moving from
// old to cur changes the verdict of a policy requiring maxAge at now:
// device.Fresh, the rule posture judges maxCheckInAge by. Renewals of a
// device that stays fresh change nothing and need no reconcile.
func CheckInFlips(old, cur *time.Time, maxAge time.Duration, now time.Time) bool {
	return device.Fresh(old, maxAge, now) != device.Fresh(cur, maxAge, now)
}
