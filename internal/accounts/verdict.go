package accounts

import (
	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/text"
)

// MaxStatusMessage bounds an AccountProvider's status.message.
const MaxStatusMessage = 1024

// Verdict is what one connectivity check says about a provider.
type Verdict struct {
	// Ready: the check succeeded.
	Ready bool
	// Reason and Message are the Ready condition's.
	Reason, Message string
	// StatusMessage is status.message: "connected", or the error bounded.
	StatusMessage string
	// Stalled: only a change to the provider's spec, its Secrets or its
	// namespace fixes it (a *ConfigError); retrying as such is pointless.
	Stalled bool
	// Transient: a retry may fix it (the provider is unreachable, a Secret
	// it refers to does not exist yet), so it is checked again sooner
	// (Recheck) and the provider is Reconciling meanwhile.
	Transient bool
}

// Judge turns the outcome of a provider's Check (err, nil for success)
// into its verdict; description says what was checked, for a success.
func Judge(err error, description string) Verdict {
	if err == nil {
		return Verdict{Ready: true, Reason: itmv1.AccountProviderReasonConnected, Message: description, StatusMessage: "connected"}
	}
	v := Verdict{Reason: itmv1.AccountProviderReasonUnreachable, Message: err.Error(), StatusMessage: text.Truncate(err.Error(), MaxStatusMessage)}
	if IsConfig(err) && ConfigReason(err) != itmv1.AccountProviderReasonSecretNotFound {
		v.Stalled, v.Reason = true, itmv1.AccountProviderReasonInvalidConfiguration
		if r := ConfigReason(err); r != "" {
			v.Reason = r
		}
	} else {
		// A missing Secret is the common GitOps ordering (the Secret comes
		// from another tool, after the provider): it is waited for.
		v.Transient = true
		if r := ConfigReason(err); r != "" {
			v.Reason = r
		}
	}
	return v
}
