// Package access resolves an AccessPolicy: subjects → people → devices →
// posture → allowed addresses, and the RBAC bindings for the subjects'
// Kubernetes identities. It is pure: the controller gathers the objects, the
// clock is an input.
package access

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/cidr"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/posture"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxDeniedInStatus bounds status.denied.
const MaxDeniedInStatus = 20

// InForce reports whether an OnboardingRequest grants its person access
// now: phase Active, and neither offboarding (spec.offboard) nor being
// deleted. (Phase Active alone is not enough: it lags an offboarding that
// has begun.)
func InForce(r *itmv1.OnboardingRequest) bool {
	return r.Status.Phase == itmv1.OnboardingPhaseActive && r.DeletionTimestamp == nil && !r.Spec.Offboard
}

// People are the usernames a policy's subjects name: members of its groups
// (people of Active OnboardingRequests) and the users it lists. A listed user
// whose OnboardingRequest exists but is not Active (not yet started,
// offboarded, denied) is left out: what is known about a person never grants
// more than their request does. A listed user without a request is a person
// managed outside onboarding and counts. requests maps username → request.
func People(s itmv1.Subjects, requests map[string]*itmv1.OnboardingRequest) map[string]bool {
	out := map[string]bool{}
	for _, u := range s.Users {
		if r, ok := requests[u]; !ok || InForce(r) {
			out[u] = true
		}
	}
	if len(s.Groups) > 0 {
		for name, r := range requests {
			if InForce(r) && slices.ContainsFunc(r.Spec.Groups, func(g string) bool { return slices.Contains(s.Groups, g) }) {
				out[name] = true
			}
		}
	}
	return out
}

// Selector is the policy's deviceSelector as a labels.Selector; nil when the
// policy has none.
func Selector(s itmv1.Subjects) (labels.Selector, error) {
	if s.DeviceSelector == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s.DeviceSelector)
	if err != nil {
		return nil, fmt.Errorf("spec.subjects.deviceSelector: %w", err)
	}
	return sel, nil
}

// Candidate is a device with the live facts the controller looked up.
type Candidate struct {
	Device *itmv1.Device
	// LastCheckIn is the renew time of the device's Lease; nil if none.
	LastCheckIn *time.Time
	// Conflicts maps each of the device's addresses that other Devices claim
	// too to those Devices' names. Such an address is denied for all of them.
	Conflicts map[string][]string
	// AddressRanges are the manager's --agent-address-cidrs (empty: any):
	// static and reported addresses outside them do not count
	// (device.Addresses).
	AddressRanges []netip.Prefix
}

// Input is everything a policy's resolution depends on.
type Input struct {
	Policy *itmv1.AccessPolicy
	// People are the usernames from People.
	People map[string]bool
	// Selector is the policy's deviceSelector (nil: none).
	Selector labels.Selector
	// Candidates are at least every device assigned to People or matching
	// Selector; others are ignored.
	Candidates []Candidate
	Now        time.Time
}

// Verdict is the outcome for one matched device.
type Verdict struct {
	Device    string
	Allowed   bool
	Posture   posture.Result
	Addresses []netip.Addr
	// Reasons are why the device is denied (posture failures, no usable address).
	Reasons []string
}

// Result is a resolved policy.
type Result struct {
	// Verdicts for every matched device, sorted by device name.
	Verdicts []Verdict
	Counts   itmv1.DeviceCounts
	// Denied is the first MaxDeniedInStatus denied devices by name.
	Denied []itmv1.DeniedDevice
	// Prefixes aggregate the allowed devices' addresses.
	Prefixes []netip.Prefix
	// NextChange is the earliest instant an allowed device stops qualifying
	// without any event (its check-in grows older than maxCheckInAge); zero
	// when nothing expires.
	NextChange time.Time
}

// Matches reports whether the policy's subjects select the device.
func Matches(d *itmv1.Device, people map[string]bool, sel labels.Selector) bool {
	return (d.Spec.Assignee != "" && people[d.Spec.Assignee]) || (sel != nil && sel.Matches(labels.Set(d.Labels)))
}

// Resolve decides every candidate and aggregates the allowed addresses.
func Resolve(in Input) Result {
	var r Result
	var allowed []netip.Addr
	cands := slices.Clone(in.Candidates)
	slices.SortFunc(cands, func(a, b Candidate) int { return cmp.Compare(a.Device.Name, b.Device.Name) })
	cands = slices.CompactFunc(cands, func(a, b Candidate) bool { return a.Device.Name == b.Device.Name })
	for _, c := range cands {
		if !Matches(c.Device, in.People, in.Selector) {
			continue
		}
		v := Evaluate(c, in.Policy.Spec.Posture, in.Now)
		r.Verdicts = append(r.Verdicts, v)
		r.Counts.Matched++
		if !v.Allowed {
			r.Counts.Denied++
			if len(r.Denied) < MaxDeniedInStatus {
				r.Denied = append(r.Denied, itmv1.DeniedDevice{Device: v.Device, Reasons: v.Reasons[:min(len(v.Reasons), 16)]})
			}
			continue
		}
		r.Counts.Allowed++
		allowed = append(allowed, v.Addresses...)
		if e := v.Posture.ExpiresAt; !e.IsZero() && (r.NextChange.IsZero() || e.Before(r.NextChange)) {
			r.NextChange = e
		}
	}
	r.Prefixes = cidr.Aggregate(allowed)
	return r
}

// Evaluate decides one device: its posture, then its usable addresses. A
// device that passes posture but has no usable address is denied, so status
// never counts as allowed a device that can reach nothing.
func Evaluate(c Candidate, p *itmv1.Posture, now time.Time) Verdict {
	d := c.Device
	v := Verdict{Device: d.Name, Posture: posture.Evaluate(posture.Input{Device: d, Posture: p, LastCheckIn: c.LastCheckIn, Now: now})}
	v.Reasons = v.Posture.Reasons()
	if !v.Posture.Allowed() {
		return v
	}
	var unusable []string
	usable, outside := device.Addresses(d, c.AddressRanges)
	for _, s := range outside {
		unusable = append(unusable, text.Truncate("address "+s+" is outside the allowed ranges", posture.MaxReason))
	}
	for _, s := range usable {
		if others := c.Conflicts[s]; len(others) > 0 {
			unusable = append(unusable, text.Truncate(fmt.Sprintf("address %s is also claimed by %s", s, strings.Join(others, ", ")), posture.MaxReason))
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			v.Addresses = append(v.Addresses, a)
		}
	}
	if len(v.Addresses) == 0 {
		v.Reasons = append(unusable, "no usable address")
		if len(unusable) == 0 {
			v.Reasons = []string{"no address known"}
		}
		return v
	}
	v.Allowed = true
	return v
}
