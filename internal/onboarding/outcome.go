package onboarding

import (
	"fmt"
	"strings"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxAccountMessage is status.accounts[].message's limit.
const MaxAccountMessage = 1024

// skippedPrefix starts the message of an account force-offboard gave up on.
const skippedPrefix = "not undone, skipped by " + itmv1.AnnotationForceOffboard + ": "

// Class is what one account's part of a pass came to.
type Class string

// Classes of an account's outcome.
const (
	// Provisioned: the account is in the state wanted (provisioned,
	// created disabled, disabled or deleted on offboarding), or there is
	// nothing of this request's to undo.
	Provisioned Class = "Provisioned"
	// Kept: nothing was asked of the provider; the last record (if any)
	// stands.
	Kept Class = "Kept"
	// Missing: the AccountProvider the request asks for does not exist;
	// the request waits for it (Pending).
	Missing Class = "Missing"
	// Blocked: offboarding cannot undo the account; it blocks completion.
	Blocked Class = "Blocked"
	// Skipped: force-offboard gave up on undoing the account.
	Skipped Class = "Skipped"
	// Permanent: waits for a person (someone else's account or group, a
	// provider that cannot work for an account not made yet).
	Permanent Class = "Permanent"
	// Transient: retried with backoff; the last known state is kept.
	Transient Class = "Transient"
)

// Outcome is one account's part of a pass.
type Outcome struct {
	Provider string
	Class    Class
	// Record is the account's entry in status.accounts; nil for none.
	Record *itmv1.AccountStatus
	// Problem is what status says went wrong (Blocked, Permanent,
	// Transient).
	Problem string
	// ProviderError: a provider call (or what it needs) failed; counted in
	// itmanager_provisioning_errors_total.
	ProviderError bool
	// Credentials and RenewAt of an enabled account.
	Credentials *itmv1.ObjectReference
	RenewAt     time.Time
}

// Account is one account at the start of a pass: the provider and the
// state wanted, whether force-offboard is set, and the last record.
type Account struct {
	Want  AccountWant
	Force bool
	Prev  *itmv1.AccountStatus
}

// Step names a provider call.
type Step string

// Provider calls, in the order a pass makes them.
const (
	StepOpen       Step = "Open"
	StepCheck      Step = "Check"
	StepEnsure     Step = "Ensure"
	StepObserve    Step = "Observe"
	StepDelete     Step = "Delete"
	StepSetEnabled Step = "SetEnabled"
	StepGroups     Step = "SyncGroups"
)

// Call is what the provider answered for one account: the first call that
// failed, or what the calls reached.
type Call struct {
	// Step and Err are the call that failed; Err nil when none did.
	Step Step
	Err  error
	// ID is the account's ID the provider reported (SetEnabled's when
	// provisioning, Observe's when offboarding).
	ID string
	// Exists (offboarding): Observe found the request's account.
	Exists bool
	// Deleted (offboarding): the provider deletes accounts rather than
	// disabling them, and deleted it.
	Deleted bool
	// Credentials and RenewAt are SetEnabled's.
	Credentials *itmv1.ObjectReference
	RenewAt     time.Time
}

func (a Account) record(state itmv1.AccountState, id, msg string) *itmv1.AccountStatus {
	return &itmv1.AccountStatus{Provider: a.Want.Provider, ID: id, State: state, Message: text.Truncate(msg, MaxAccountMessage)}
}

func (a Account) prevID() string {
	if a.Prev == nil {
		return ""
	}
	return a.Prev.ID
}

func (a Account) out(c Class, rec *itmv1.AccountStatus) Outcome {
	return Outcome{Provider: a.Want.Provider, Class: c, Record: rec}
}

// Before decides what needs no provider call: a provider that does not
// exist (exists false), a provider that is not the default the request
// fixed (notFixed, the reason), an account deleted before or given up on
// by force. It returns false when the provider must be called.
func (a Account) Before(exists bool, notFixed string) (Outcome, bool) {
	gone, prev := a.Want.Want == WantGone, a.Prev
	if !exists {
		switch {
		case !gone:
			o := a.out(Missing, nil)
			if prev != nil {
				o.Record = a.record(prev.State, prev.ID, "AccountProvider "+a.Want.Provider+" does not exist")
			}
			return o, true
		case prev == nil:
			// Named but never provisioned and gone: nothing to undo.
			return a.out(Kept, nil), true
		case prev.State == itmv1.AccountStateDeleted || prev.State == itmv1.AccountStateDisabled:
			return a.out(Kept, a.record(prev.State, prev.ID, prev.Message)), true
		default:
			return a.Failed(fmt.Errorf("AccountProvider %s does not exist, so its account cannot be undone; set the annotation %s to finish without it",
				a.Want.Provider, itmv1.AnnotationForceOffboard)), true
		}
	}
	switch {
	case notFixed != "" && !gone:
		return a.Failed(&accounts.ConfigError{Msg: notFixed}), true
	case gone && prev != nil && prev.State == itmv1.AccountStateDeleted:
		// Done before: not revisited.
		return a.out(Kept, a.record(prev.State, prev.ID, prev.Message)), true
	case gone && prev != nil && prev.State == itmv1.AccountStateFailed && strings.HasPrefix(prev.Message, skippedPrefix):
		// Given up on by force: not revisited.
		return a.out(Skipped, a.record(prev.State, prev.ID, prev.Message)), true
	}
	return Outcome{}, false
}

// After classifies what the provider answered.
func (a Account) After(c Call) Outcome {
	switch a.Want.Want {
	case WantEnabled, WantDisabled:
		active := a.Want.Want == WantEnabled
		state, msg := itmv1.AccountStateProvisioned, ""
		if !active {
			state, msg = itmv1.AccountStateDisabled, "created disabled until spec.startDate"
		}
		var o Outcome
		switch {
		case c.Err == nil:
			o = a.out(Provisioned, a.record(state, c.ID, msg))
		case c.Step == StepGroups && accounts.IsConflict(c.Err):
			// The account is in place; a group someone else owns is not
			// joined. Reported, and waits for a person.
			o = a.out(Permanent, a.record(state, c.ID, c.Err.Error()))
			o.Problem, o.ProviderError = a.problem(c.Err), true
		default:
			return a.Failed(c.Err)
		}
		if active {
			o.Credentials, o.RenewAt = c.Credentials, c.RenewAt
		}
		return o
	default: // WantGone
		switch {
		case c.Step == StepObserve && accounts.IsConflict(c.Err):
			// Someone else's account (never ours, or ours replaced):
			// nothing of this request's to undo, and never touched.
			o := a.out(Provisioned, nil)
			if a.Prev != nil {
				o.Record = a.record(itmv1.AccountStateFailed, a.Prev.ID, c.Err.Error()+"; nothing of this request's to undo")
			}
			return o
		case c.Err != nil:
			return a.Failed(c.Err)
		case !c.Exists:
			o := a.out(Provisioned, nil)
			if a.Prev != nil {
				o.Record = a.record(itmv1.AccountStateDeleted, a.Prev.ID, "")
			}
			return o
		case c.Deleted:
			return a.out(Provisioned, a.record(itmv1.AccountStateDeleted, c.ID, ""))
		default:
			return a.out(Provisioned, a.record(itmv1.AccountStateDisabled, c.ID, ""))
		}
	}
}

func (a Account) problem(err error) string {
	return fmt.Sprintf("AccountProvider %s: %s", a.Want.Provider, err.Error())
}

// Failed classifies a failed provider call. Offboarding: blocked, or, with
// force-offboard, skipped. Otherwise a conflict (someone else's account)
// or a configuration error for an account never made (no record, or only
// the record of this same failure) is permanent and marks the account
// Failed; anything else is transient and keeps the last known state.
func (a Account) Failed(err error) Outcome {
	msg := err.Error()
	keep := func(msg string) *itmv1.AccountStatus {
		if a.Prev == nil {
			return a.record(itmv1.AccountStateFailed, "", msg)
		}
		return a.record(a.Prev.State, a.Prev.ID, msg)
	}
	var o Outcome
	switch {
	case a.Want.Want == WantGone && a.Force:
		o = a.out(Skipped, a.record(itmv1.AccountStateFailed, a.prevID(), skippedPrefix+msg))
	case a.Want.Want == WantGone:
		o = a.out(Blocked, keep(msg))
		o.Problem = a.problem(err)
	case accounts.IsConflict(err) || (accounts.IsConfig(err) && a.prevID() == ""):
		o = a.out(Permanent, a.record(itmv1.AccountStateFailed, a.prevID(), msg))
		o.Problem = a.problem(err)
	default:
		o = a.out(Transient, keep(msg+"; retrying"))
		o.Problem = a.problem(err)
	}
	o.ProviderError = true
	return o
}
