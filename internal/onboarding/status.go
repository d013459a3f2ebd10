package onboarding

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// Pass is what one reconcile of a request found and did.
type Pass struct {
	Accounts    []itmv1.AccountStatus
	Credentials *itmv1.ObjectReference
	RenewAt     time.Time
	// Transient problems are retried with backoff; Permanent ones wait for
	// a change (a conflict, a bad provider); Blocked are what offboarding
	// cannot undo; Skipped the providers force-offboard gave up on;
	// Missing the named providers that do not exist.
	Transient, Permanent, Blocked, Skipped, Missing []string
	// Devices assigned (or still assigned) to the person, sorted.
	Devices []string
	// Unmet explains each device request no device satisfies.
	Unmet []string
	// Held are devices that could not be let go.
	Held []string
	// AssignRetry: an assignment lost a race for a device.
	AssignRetry bool
	// Force: itmanager.io/force-offboard is set on an offboarding request.
	Force bool
}

// Add records one account's outcome.
func (p *Pass) Add(o Outcome) {
	if o.Record != nil {
		p.Accounts = append(p.Accounts, *o.Record)
	}
	switch o.Class {
	case Missing:
		p.Missing = append(p.Missing, o.Provider)
	case Skipped:
		p.Skipped = append(p.Skipped, o.Provider)
	case Blocked:
		p.Blocked = append(p.Blocked, o.Problem)
	case Permanent:
		p.Permanent = append(p.Permanent, o.Problem)
	case Transient:
		p.Transient = append(p.Transient, o.Problem)
	}
	if o.Credentials != nil && p.Credentials == nil {
		p.Credentials = o.Credentials
	}
	if !o.RenewAt.IsZero() && (p.RenewAt.IsZero() || o.RenewAt.Before(p.RenewAt)) {
		p.RenewAt = o.RenewAt
	}
}

// Failing is true when a provider failed in a way worth retrying soon: a
// transient error, or an account offboarding cannot undo yet (unless
// force-offboard gave up on it).
func (p *Pass) Failing() bool {
	return len(p.Transient) > 0 || (len(p.Blocked) > 0 && !p.Force)
}

func (p *Pass) accountsOK() bool {
	return len(p.Transient)+len(p.Permanent)+len(p.Missing)+len(p.Blocked) == 0
}

// problems are the account problems in the order status reports them.
func (p *Pass) problems() []string {
	var out []string
	out = append(out, p.Permanent...)
	out = append(out, p.Blocked...)
	out = append(out, p.Transient...)
	for _, m := range p.Missing {
		out = append(out, "AccountProvider "+m+" does not exist")
	}
	return out
}

// Status is r's status after pass p at now, for decision d: the phase,
// AccountsReady, DevicesAssigned, and Ready/Reconciling/Stalled.
func Status(r *itmv1.OnboardingRequest, d Decision, p *Pass, now time.Time) itmv1.OnboardingRequestStatus {
	st := *r.Status.DeepCopy()
	gen := r.Generation
	st.Accounts = p.Accounts
	st.Devices = p.Devices
	st.CredentialsSecret = nil
	if d.Stage == Active {
		st.CredentialsSecret = p.Credentials
		if st.CredentialsSecret == nil && len(p.Transient) > 0 {
			// A provider that did not answer did not revoke anything.
			st.CredentialsSecret = r.Status.CredentialsSecret
		}
	}
	st.Phase = phase(r.Status.Phase, d.Stage, p)
	reason, ok, msg := accountsReady(d.Stage, p)
	kit.SetBool(&st.Conditions, gen, now, itmv1.OnboardingConditionAccountsReady, ok, reason, msg)
	reason, ok, msg = devicesAssigned(d.Stage, p)
	kit.SetBool(&st.Conditions, gen, now, itmv1.OnboardingConditionDevicesAssigned, ok, reason, msg)
	kit.Summarize(&st.Conditions, &st.ObservedGeneration, gen, now, Summary(st.Phase, d, p))
	return st
}

// phase is the phase after a pass; was is the phase before it.
func phase(was itmv1.OnboardingPhase, stage Stage, p *Pass) itmv1.OnboardingPhase {
	undone := p.accountsOK() && (len(p.Devices) == 0 || (p.Force && len(p.Devices) == len(p.Held)))
	switch {
	case stage == Offboard && undone:
		return itmv1.OnboardingPhaseOffboarded
	case stage == Offboard:
		return itmv1.OnboardingPhaseOffboarding
	case stage == Denied:
		return itmv1.OnboardingPhaseFailed
	case stage == AwaitingApproval:
		return itmv1.OnboardingPhaseAwaitingApproval
	case was == itmv1.OnboardingPhaseActive && stage == Active:
		// Active means started and not left: a provider that stops
		// answering, or a device request added later, shows in the
		// conditions without withdrawing the access the person has.
		return itmv1.OnboardingPhaseActive
	case len(p.Permanent) > 0:
		return itmv1.OnboardingPhaseFailed
	case len(p.Missing) > 0:
		return itmv1.OnboardingPhasePending
	case stage == Scheduled:
		return itmv1.OnboardingPhaseScheduled
	case p.accountsOK() && len(p.Unmet) == 0:
		return itmv1.OnboardingPhaseActive
	default:
		return itmv1.OnboardingPhaseProvisioning
	}
}

// accountsReady is the AccountsReady condition: reason, status, message.
func accountsReady(stage Stage, p *Pass) (string, bool, string) {
	switch {
	case !p.accountsOK():
		reason := itmv1.OnboardingReasonProvisioningFailed
		switch {
		case len(p.Blocked) > 0:
			reason = itmv1.OnboardingReasonOffboardingBlocked
		case len(p.Missing) > 0 && len(p.Transient)+len(p.Permanent) == 0:
			reason = itmv1.OnboardingReasonProviderNotFound
		}
		return reason, false, strings.Join(p.problems(), "; ")
	case Leaving(stage) && len(p.Skipped) > 0:
		return itmv1.OnboardingReasonForceOffboarded, true, "skipped by " + itmv1.AnnotationForceOffboard + ": " + strings.Join(p.Skipped, ", ")
	case stage == AwaitingApproval && len(p.Accounts) == 0:
		return itmv1.OnboardingReasonAwaitingApproval, false, "no account is created before approval"
	case stage == Denied && len(p.Accounts) == 0:
		return itmv1.OnboardingReasonDenied, false, "no account is created for a denied request"
	case Leaving(stage) || stage == AwaitingApproval:
		return itmv1.OnboardingReasonOffboarded, true, fmt.Sprintf("%d account(s) disabled or deleted", len(p.Accounts))
	case stage == Scheduled:
		return itmv1.OnboardingReasonCreatedDisabled, true, fmt.Sprintf("%d account(s) exist, disabled until spec.startDate", len(p.Accounts))
	default:
		return itmv1.OnboardingReasonProvisioned, true, fmt.Sprintf("%d account(s) provisioned", len(p.Accounts))
	}
}

// devicesAssigned is the DevicesAssigned condition: reason, status, message.
func devicesAssigned(stage Stage, p *Pass) (string, bool, string) {
	leaving := Leaving(stage)
	switch {
	case len(p.Unmet) > 0:
		return itmv1.OnboardingReasonDeviceUnavailable, false, strings.Join(p.Unmet, "; ")
	case leaving && len(p.Held) > 0:
		return itmv1.OnboardingReasonReleaseBlocked, false, strings.Join(p.Held, "; ")
	case leaving && len(p.Devices) > 0:
		return itmv1.OnboardingReasonReleasing, false, "still assigned: " + strings.Join(p.Devices, ", ")
	case leaving:
		return itmv1.OnboardingReasonReleased, true, "no device is assigned"
	case stage == AwaitingApproval:
		return itmv1.OnboardingReasonAwaitingApproval, false, "no device is assigned before approval"
	default:
		return itmv1.OnboardingReasonAssigned, true, fmt.Sprintf("%d device(s) assigned", len(p.Devices))
	}
}

// Summary is the kstatus summary of a request in phase ph: Ready with its
// reason and message; Stalled (NeedsAttention) while a permanent problem
// or a denial waits for a person; Reconciling while the phase is one that
// finishes by itself (Pending, Provisioning, Offboarding) or a provider
// that did not answer is retried. AwaitingApproval is neither: Ready=False
// waiting for a person's decision (kstatus InProgress; Argo CD Suspended).
func Summary(ph itmv1.OnboardingPhase, d Decision, p *Pass) kit.Summary {
	problems := p.problems()
	all := strings.Join(append(problems, p.Unmet...), "; ")
	s := kit.Summary{Reason: string(ph)}
	switch ph {
	case itmv1.OnboardingPhaseActive:
		s.Reason, s.Message = itmv1.OnboardingReasonDegraded, all
		if all == "" {
			s.Ready, s.Reason, s.Message = true, itmv1.OnboardingReasonActive, "accounts provisioned, devices assigned"
		}
	case itmv1.OnboardingPhaseScheduled:
		s.Ready, s.Reason, s.Message = p.accountsOK() && len(p.Unmet) == 0, itmv1.OnboardingReasonScheduled, d.Why
	case itmv1.OnboardingPhaseOffboarded:
		s.Ready, s.Reason, s.Message = true, itmv1.OnboardingReasonOffboarded, d.Why
	case itmv1.OnboardingPhaseAwaitingApproval:
		s.Reason, s.Message = itmv1.OnboardingReasonAwaitingApproval, d.Why
	case itmv1.OnboardingPhaseFailed:
		s.Reason, s.Message = itmv1.OnboardingReasonFailed, strings.Join(problems, "; ")
		if d.Stage == Denied {
			s.Reason, s.Message = itmv1.OnboardingReasonDenied, d.Why+"; nothing is provisioned"
		}
	default:
		s.Message = all
		if s.Message == "" {
			s.Message = d.Why
		}
	}
	if len(p.Permanent) > 0 || d.Stage == Denied {
		s.Stalled, s.StalledReason = true, itmv1.OnboardingReasonNeedsAttention
	}
	switch {
	case ph == itmv1.OnboardingPhaseProvisioning, ph == itmv1.OnboardingPhaseOffboarding, ph == itmv1.OnboardingPhasePending:
		s.Reconciling, s.ReconcilingReason = true, string(ph)
	case !s.Ready && !s.Stalled && len(p.Transient) > 0:
		// An Active (or Scheduled) request whose provider did not answer:
		// retried, so it finishes by itself.
		s.Reconciling, s.ReconcilingReason = true, itmv1.OnboardingReasonProvisioningFailed
	}
	return s
}

// Event is a Kubernetes Event to send.
type Event struct {
	Type, Reason, Message string
}

// PhaseEvent is the Event that announces a change of phase from `from` to
// `to` (the status a pass wrote), false when the phase did not change:
// named after the new phase, a Warning for Failed and for an offboarding
// blocked by a provider, its note Ready's message and what force-offboard
// skipped.
func PhaseEvent(from, to *itmv1.OnboardingRequestStatus, p *Pass) (Event, bool) {
	if from.Phase == to.Phase {
		return Event{}, false
	}
	kind := corev1.EventTypeNormal
	if to.Phase == itmv1.OnboardingPhaseFailed || (to.Phase == itmv1.OnboardingPhaseOffboarding && len(p.Blocked) > 0) {
		kind = corev1.EventTypeWarning
	}
	var msg string
	if c := meta.FindStatusCondition(to.Conditions, itmv1.ConditionReady); c != nil {
		msg = c.Message
	}
	if len(p.Skipped) > 0 {
		msg += "; skipped by force-offboard: " + strings.Join(p.Skipped, ", ")
	}
	return Event{Type: kind, Reason: string(to.Phase), Message: msg}, true
}
