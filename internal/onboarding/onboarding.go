// Package onboarding decides what an OnboardingRequest asks for at an
// instant (the stage of its life), which accounts to hold in which state,
// and which devices to assign or release. It is pure: the controller reads
// the world, asks, and applies.
package onboarding

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	// Aliased: the package's tests name a helper device.
	devicefacts "github.com/itmanager-io/itmanager/internal/device"
)

// The finalizer of OnboardingRequests.
const (
	// Finalizer holds a deleted request until everything is undone.
	Finalizer = "itmanager.io/offboarding"
)

// Stage is what a request asks for now.
type Stage string

// Stages.
const (
	// Denied: an approver refused; nothing is provisioned (and anything
	// provisioned before the refusal is undone).
	Denied Stage = "Denied"
	// AwaitingApproval: nothing is provisioned until an approver decides.
	AwaitingApproval Stage = "AwaitingApproval"
	// Scheduled: before startDate accounts exist, disabled.
	Scheduled Stage = "Scheduled"
	// Active: accounts enabled, devices assigned.
	Active Stage = "Active"
	// Offboard: everything undone, the record kept.
	Offboard Stage = "Offboard"
)

// Decision is the stage at an instant and when it next changes by time.
type Decision struct {
	Stage Stage
	// Why explains the stage in a sentence.
	Why string
	// Next is when the stage changes with time alone (startDate, endDate);
	// zero for never.
	Next time.Time
}

// Decide computes the stage of r at now. Offboarding is final: a request
// that began offboarding never provisions again (a returning person gets a
// new request).
func Decide(r *itmv1.OnboardingRequest, now time.Time) Decision {
	switch {
	case r.DeletionTimestamp != nil:
		return Decision{Stage: Offboard, Why: "the request is being deleted"}
	case r.Spec.Offboard:
		return Decision{Stage: Offboard, Why: "spec.offboard is true"}
	case r.Spec.EndDate != nil && !now.Before(r.Spec.EndDate.Time):
		return Decision{Stage: Offboard, Why: fmt.Sprintf("spec.endDate %s has passed", r.Spec.EndDate.UTC().Format(time.RFC3339))}
	case r.Status.Phase == itmv1.OnboardingPhaseOffboarding || r.Status.Phase == itmv1.OnboardingPhaseOffboarded:
		return Decision{Stage: Offboard, Why: "offboarding is final; a returning person gets a new OnboardingRequest"}
	}
	var end time.Time
	if r.Spec.EndDate != nil {
		end = r.Spec.EndDate.Time
	}
	if meta.IsStatusConditionTrue(r.Status.Conditions, itmv1.OnboardingConditionDenied) {
		return Decision{Stage: Denied, Why: "denied: " + conditionMessage(r, itmv1.OnboardingConditionDenied)}
	}
	if ApprovalRequired(r) && !meta.IsStatusConditionTrue(r.Status.Conditions, itmv1.OnboardingConditionApproved) {
		return Decision{Stage: AwaitingApproval, Why: "waiting for an approver to set the Approved condition (kubectl itm approve " + r.Name + ")", Next: end}
	}
	if r.Spec.StartDate != nil && now.Before(r.Spec.StartDate.Time) {
		return Decision{Stage: Scheduled, Why: fmt.Sprintf("accounts are enabled at spec.startDate %s", r.Spec.StartDate.UTC().Format(time.RFC3339)),
			Next: r.Spec.StartDate.Time}
	}
	return Decision{Stage: Active, Next: end}
}

// Leaving is true for the stages that undo everything: Offboard, Denied.
func Leaving(s Stage) bool { return s == Offboard || s == Denied }

// ApprovalRequired is spec.approvalRequired, true when unset (fail closed).
func ApprovalRequired(r *itmv1.OnboardingRequest) bool {
	return r.Spec.ApprovalRequired == nil || *r.Spec.ApprovalRequired
}

func conditionMessage(r *itmv1.OnboardingRequest, t string) string {
	c := meta.FindStatusCondition(r.Status.Conditions, t)
	if c == nil {
		return ""
	}
	if c.Message == "" {
		return c.Reason
	}
	return c.Reason + ": " + c.Message
}

// Want is the state an account should be in.
type Want string

// Wants.
const (
	// WantEnabled: exists, enabled, in the person's groups.
	WantEnabled Want = "Enabled"
	// WantDisabled: exists, disabled (before startDate).
	WantDisabled Want = "Disabled"
	// WantGone: offboarded (disabled or deleted, per provider), or never
	// created when nothing was.
	WantGone Want = "Gone"
)

// AccountWant is one provider's account and its wanted state.
type AccountWant struct {
	Provider string
	Want     Want
}

// MaxDefaultProviders bounds status.defaultProviders.names.
const MaxDefaultProviders = 16

// DefaultsToFix decides whether a pass must first record the request's
// implicit defaults: a request that names no AccountProvider gets the
// providers marked default (current, as listed now) at the instant it is
// approved or, when approval is not required, first provisioned, and
// keeps that set; a provider made default later never reaches it. It
// returns the set to record and true when the request needs one and has
// none yet (the stages that provision: Scheduled, Active). More defaults
// than status can hold is an error: the request waits, nothing is
// provisioned from a truncated set.
func DefaultsToFix(r *itmv1.OnboardingRequest, stage Stage, current []string) ([]string, bool, error) {
	if len(r.Spec.AccountProviders) > 0 || r.Status.DefaultProviders != nil || (stage != Active && stage != Scheduled) {
		return nil, false, nil
	}
	names := slices.Clone(current)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > MaxDefaultProviders {
		return nil, false, fmt.Errorf("%d AccountProviders are marked default, more than the %d a request can record in status.defaultProviders; name the providers in spec.accountProviders",
			len(names), MaxDefaultProviders)
	}
	if names == nil {
		names = []string{}
	}
	return names, true, nil
}

// Providers are the AccountProviders a request asks for: those it names,
// or, when it names none, the defaults recorded in its status (none before
// they are fixed).
func Providers(r *itmv1.OnboardingRequest) []string {
	if len(r.Spec.AccountProviders) > 0 {
		return r.Spec.AccountProviders
	}
	if r.Status.DefaultProviders != nil {
		return r.Status.DefaultProviders.Names
	}
	return nil
}

// NotTheFixedDefault says why provider p, found under a name the request
// took from its recorded defaults, is not the provider that was fixed
// there: one created after the defaults were fixed is a later object of
// the same name (deleted and recreated, perhaps elsewhere) and inherits
// nothing. "" when p may serve the request.
func NotTheFixedDefault(r *itmv1.OnboardingRequest, p *itmv1.AccountProvider) string {
	d := r.Status.DefaultProviders
	if len(r.Spec.AccountProviders) > 0 || d == nil || !p.CreationTimestamp.After(d.FixedAt.Time) {
		return ""
	}
	return fmt.Sprintf("AccountProvider %s was created at %s, after this request's default providers were fixed at %s: a provider recreated under a default's name inherits none of its requests; name it in spec.accountProviders (a change that needs approval)",
		p.Name, p.CreationTimestamp.UTC().Format(time.RFC3339), d.FixedAt.UTC().Format(time.RFC3339))
}

// Accounts lists every provider the request has or should have an account
// in, with the wanted state: the providers it asks for (Providers) per
// stage, and every provider recorded in status that is no longer wanted,
// so nothing recorded is forgotten. Sorted by name.
func Accounts(r *itmv1.OnboardingRequest, stage Stage) []AccountWant {
	named := Providers(r)
	want := map[string]Want{}
	for _, p := range named {
		switch stage {
		case Active:
			want[p] = WantEnabled
		case Scheduled:
			want[p] = WantDisabled
		case Offboard:
			// Visited even without a record: an account created just
			// before a crash is found by its ownership mark.
			want[p] = WantGone
		}
	}
	for _, a := range r.Status.Accounts {
		if _, ok := want[a.Provider]; !ok {
			want[a.Provider] = WantGone
		}
	}
	out := make([]AccountWant, 0, len(want))
	for p, w := range want {
		out = append(out, AccountWant{Provider: p, Want: w})
	}
	slices.SortFunc(out, func(a, b AccountWant) int { return cmp.Compare(a.Provider, b.Provider) })
	return out
}

// Assignment is a device to assign for one device request.
type Assignment struct {
	// Index of the device request in spec.devices.
	Index  int
	Device string
}

// DevicePlan is what to do with devices.
type DevicePlan struct {
	// Keep are devices assigned to the person that satisfy a request.
	Keep []string
	// Assign are devices to assign (each Active and unassigned when read).
	Assign []Assignment
	// Release are devices to unassign.
	Release []string
	// Unmet explains each request that no device satisfies, by field.
	Unmet []string
}

// Devices plans assignments for user. recorded are the devices the request
// assigned before (status.devices); devices is the inventory. A request is
// satisfied first by a device already assigned to the person (one device
// per request), then by an Active, unassigned device (which one depends on
// the person, so that requests racing for a pool spread over it); a
// recorded device no request wants any more is released. That is for the
// stages that hold devices (Scheduled, Active). Awaiting approval, nothing is
// assigned and what this request recorded goes back; leaving (Offboard,
// Denied), every device assigned to the person goes back, recorded or not
// (the username is theirs alone).
func Devices(user string, requests []itmv1.DeviceRequest, recorded []string, devices []itmv1.Device, stage Stage) DevicePlan {
	want := stage == Active || stage == Scheduled
	sorted := slices.Clone(devices)
	slices.SortFunc(sorted, func(a, b itmv1.Device) int { return cmp.Compare(a.Name, b.Name) })
	byName := map[string]*itmv1.Device{}
	for i := range sorted {
		byName[sorted[i].Name] = &sorted[i]
	}
	var plan DevicePlan
	used := map[string]bool{}
	if want {
		satisfied := make([]bool, len(requests))
		// Pass 1: devices the person already holds, recorded ones first,
		// named requests before class requests.
		mine := func(d *itmv1.Device) bool { return d.Spec.Assignee == user }
		for _, pass := range []func(d *itmv1.Device) bool{
			func(d *itmv1.Device) bool { return slices.Contains(recorded, d.Name) },
			func(*itmv1.Device) bool { return true },
		} {
			for i, req := range requests {
				if satisfied[i] {
					continue
				}
				for _, d := range candidates(req, sorted, byName) {
					if mine(d) && !used[d.Name] && pass(d) {
						satisfied[i], used[d.Name] = true, true
						plan.Keep = append(plan.Keep, d.Name)
						break
					}
				}
			}
		}
		// Pass 2: available devices.
		for i, req := range requests {
			if satisfied[i] {
				continue
			}
			var free []string
			for _, d := range candidates(req, sorted, byName) {
				if available(d) && !used[d.Name] {
					free = append(free, d.Name)
				}
			}
			if len(free) == 0 {
				plan.Unmet = append(plan.Unmet, unmet(i, req, byName))
				continue
			}
			chosen := free[spread(user, i, len(free))]
			used[chosen] = true
			plan.Assign = append(plan.Assign, Assignment{Index: i, Device: chosen})
		}
	}
	if Leaving(stage) {
		for i := range sorted {
			if sorted[i].Spec.Assignee == user {
				plan.Release = append(plan.Release, sorted[i].Name)
			}
		}
	} else {
		for _, name := range recorded {
			if d, ok := byName[name]; ok && !used[name] && d.Spec.Assignee == user {
				plan.Release = append(plan.Release, name)
			}
		}
	}
	slices.Sort(plan.Keep)
	slices.Sort(plan.Release)
	return plan
}

// spread picks one of n available devices for request i of user: always
// the same for the same inventory, but different people start at different
// places, so requests racing for one pool rarely want the same device.
func spread(user string, i, n int) int {
	h := fnv.New32a()
	_, _ = fmt.Fprintf(h, "%s/%d", user, i)
	return int(h.Sum32()) % n
}

// available is an Active device assigned to nobody.
func available(d *itmv1.Device) bool {
	return d.Spec.Assignee == "" && devicefacts.Active(d) && d.DeletionTimestamp == nil
}

// lifecycle is the device's lifecycle as a person reads it (unset is
// Active).
func lifecycle(d *itmv1.Device) itmv1.DeviceLifecycle {
	if devicefacts.Active(d) {
		return itmv1.DeviceLifecycleActive
	}
	return d.Spec.Lifecycle
}

// candidates are the devices a request could be satisfied by, by name.
func candidates(req itmv1.DeviceRequest, sorted []itmv1.Device, byName map[string]*itmv1.Device) []*itmv1.Device {
	if req.Name != "" {
		if d, ok := byName[req.Name]; ok && d.Spec.Class != itmv1.DeviceClassNode {
			return []*itmv1.Device{d}
		}
		return nil
	}
	if req.Class == itmv1.DeviceClassNode {
		// Node devices are infrastructure, never a person's device.
		return nil
	}
	sel := labels.Everything()
	if req.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(req.Selector)
		if err != nil {
			return nil
		}
		sel = s
	}
	var out []*itmv1.Device
	for i := range sorted {
		d := &sorted[i]
		if d.Spec.Class == req.Class && sel.Matches(labels.Set(d.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

// unmet says why request i has no device, naming the field.
func unmet(i int, req itmv1.DeviceRequest, byName map[string]*itmv1.Device) string {
	field := fmt.Sprintf("spec.devices[%d]", i)
	if req.Name != "" {
		d, ok := byName[req.Name]
		switch {
		case !ok:
			return fmt.Sprintf("%s: Device %s does not exist", field, req.Name)
		case d.Spec.Class == itmv1.DeviceClassNode:
			return fmt.Sprintf("%s: Device %s is a Node; Node devices are never assigned to a person", field, req.Name)
		case d.Spec.Assignee != "":
			return fmt.Sprintf("%s: Device %s is assigned to %s", field, req.Name, d.Spec.Assignee)
		default:
			return fmt.Sprintf("%s: Device %s is %s, not Active", field, req.Name, lifecycle(d))
		}
	}
	if req.Class == itmv1.DeviceClassNode {
		return fmt.Sprintf("%s.class: Node devices are never assigned to a person", field)
	}
	if req.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(req.Selector); err != nil {
			return fmt.Sprintf("%s.selector: %v", field, err)
		}
		return fmt.Sprintf("%s: no Active, unassigned %s Device matches the selector", field, req.Class)
	}
	return fmt.Sprintf("%s: no Active, unassigned %s Device", field, req.Class)
}
