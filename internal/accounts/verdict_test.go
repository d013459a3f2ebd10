package accounts

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func TestJudgeStallsOnlyOnWhatAChangeMustFix(t *testing.T) {
	cases := []struct {
		name               string
		err                error
		ready              bool
		reason             string
		stalled, transient bool
		statusMessage      string
	}{
		{"connected", nil, true, itmv1.AccountProviderReasonConnected, false, false, "connected"},
		{"unreachable is retried, not stalled", errors.New("dial tcp: connection refused"), false, itmv1.AccountProviderReasonUnreachable, false, true, "dial tcp: connection refused"},
		{"invalid configuration stalls", &ConfigError{Msg: "spec.ldap.url: bad"}, false, itmv1.AccountProviderReasonInvalidConfiguration, true, false, "spec.ldap.url: bad"},
		{"wrapped configuration error stalls", fmt.Errorf("open: %w", &ConfigError{Msg: "bad"}), false, itmv1.AccountProviderReasonInvalidConfiguration, true, false, "open: bad"},
		{"a missing Secret is waited for (retried, not stalled) under its own reason", &ConfigError{Reason: itmv1.AccountProviderReasonSecretNotFound, Msg: "Secret x/y does not exist"}, false, itmv1.AccountProviderReasonSecretNotFound, false, true, "Secret x/y does not exist"},
		{"unmanaged namespace stalls with its own reason", &ConfigError{Reason: itmv1.AccountProviderReasonNamespaceNotManaged, Msg: "not labelled"}, false, itmv1.AccountProviderReasonNamespaceNotManaged, true, false, "not labelled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Judge(c.err, "ServiceAccounts in namespace x")
			if v.Ready != c.ready || v.Reason != c.reason || v.Stalled != c.stalled || v.Transient != c.transient || v.StatusMessage != c.statusMessage {
				t.Fatalf("Judge = %+v, want ready %v reason %s stalled %v transient %v status message %q", v, c.ready, c.reason, c.stalled, c.transient, c.statusMessage)
			}
			if c.err == nil && v.Message != "ServiceAccounts in namespace x" || c.err != nil && v.Message != c.err.Error() {
				t.Fatalf("Message = %q", v.Message)
			}
		})
	}
	if v := Judge(errors.New(strings.Repeat("x", 2000)), ""); len(v.StatusMessage) > MaxStatusMessage || len(v.Message) != 2000 {
		t.Fatalf("status message %d bytes (limit %d), condition message %d bytes (want all 2000)", len(v.StatusMessage), MaxStatusMessage, len(v.Message))
	}
}
