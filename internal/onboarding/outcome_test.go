package onboarding

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
)

func rec(state itmv1.AccountState, id, msg string) *itmv1.AccountStatus {
	return &itmv1.AccountStatus{Provider: "ldap", ID: id, State: state, Message: msg}
}

func acct(want Want, force bool, prev *itmv1.AccountStatus) Account {
	return Account{Want: AccountWant{Provider: "ldap", Want: want}, Force: force, Prev: prev}
}

// outcomeCase is one row: what is expected of an Outcome. Literal strings,
// so a changed message or state is caught.
type outcomeCase struct {
	name    string
	got     Outcome
	class   Class
	record  *itmv1.AccountStatus
	problem string
	counted bool
}

func (c outcomeCase) check(t *testing.T) {
	t.Helper()
	o := c.got
	if o.Provider != "ldap" || o.Class != c.class || o.Problem != c.problem || o.ProviderError != c.counted {
		t.Errorf("%s: class %q problem %q counted %v, want %q %q %v", c.name, o.Class, o.Problem, o.ProviderError, c.class, c.problem, c.counted)
	}
	if !reflect.DeepEqual(o.Record, c.record) {
		t.Errorf("%s: record %+v, want %+v", c.name, o.Record, c.record)
	}
}

func TestBeforeDecidesWhatNeedsNoProviderCall(t *testing.T) {
	provisioned := rec(itmv1.AccountStateProvisioned, "uid=ada", "")
	const gone = "AccountProvider ldap does not exist, so its account cannot be undone; set the annotation itmanager.io/force-offboard to finish without it"
	skipped := rec(itmv1.AccountStateFailed, "uid=ada", "not undone, skipped by itmanager.io/force-offboard: down")
	run := func(a Account, exists bool, notFixed string) Outcome {
		t.Helper()
		o, decided := a.Before(exists, notFixed)
		if !decided {
			t.Fatalf("Before(%+v, %v, %q) asks for a provider call", a, exists, notFixed)
		}
		return o
	}
	for _, c := range []outcomeCase{
		{"missing provider, wanted, no record: Missing, nothing recorded",
			run(acct(WantEnabled, false, nil), false, ""), Missing, nil, "", false},
		{"missing provider, wanted, recorded: Missing, record kept with why",
			run(acct(WantDisabled, false, provisioned), false, ""), Missing, rec(itmv1.AccountStateProvisioned, "uid=ada", "AccountProvider ldap does not exist"), "", false},
		{"missing provider, gone, never provisioned: nothing to undo",
			run(acct(WantGone, false, nil), false, ""), Kept, nil, "", false},
		{"missing provider, gone, already deleted: kept",
			run(acct(WantGone, false, rec(itmv1.AccountStateDeleted, "x", "m")), false, ""), Kept, rec(itmv1.AccountStateDeleted, "x", "m"), "", false},
		{"missing provider, gone, already disabled: kept",
			run(acct(WantGone, false, rec(itmv1.AccountStateDisabled, "x", "")), false, ""), Kept, rec(itmv1.AccountStateDisabled, "x", ""), "", false},
		{"missing provider, gone, still provisioned: Blocked",
			run(acct(WantGone, false, provisioned), false, ""), Blocked, rec(itmv1.AccountStateProvisioned, "uid=ada", gone), "AccountProvider ldap: " + gone, true},
		{"missing provider, gone, still provisioned, force: Skipped",
			run(acct(WantGone, true, provisioned), false, ""), Skipped, rec(itmv1.AccountStateFailed, "uid=ada", "not undone, skipped by itmanager.io/force-offboard: "+gone), "", true},
		{"not the fixed default, no record: Permanent",
			run(acct(WantEnabled, false, nil), true, "recreated"), Permanent, rec(itmv1.AccountStateFailed, "", "recreated"), "AccountProvider ldap: recreated", true},
		{"not the fixed default, account made before: Transient, state kept",
			run(acct(WantEnabled, false, provisioned), true, "recreated"), Transient, rec(itmv1.AccountStateProvisioned, "uid=ada", "recreated; retrying"), "AccountProvider ldap: recreated", true},
		{"gone, deleted before: not revisited",
			run(acct(WantGone, false, rec(itmv1.AccountStateDeleted, "x", "")), true, "recreated"), Kept, rec(itmv1.AccountStateDeleted, "x", ""), "", false},
		{"gone, skipped by force before: not revisited, not counted again",
			run(acct(WantGone, false, skipped), true, ""), Skipped, skipped, "", false},
	} {
		c.check(t)
	}
	for name, a := range map[string]Account{
		"enabled, provider exists":              acct(WantEnabled, false, provisioned),
		"gone, provisioned":                     acct(WantGone, false, provisioned),
		"gone, never recorded (crash recovery)": acct(WantGone, false, nil),
		"gone, failed without the skip prefix":  acct(WantGone, false, rec(itmv1.AccountStateFailed, "x", "down")),
	} {
		if o, decided := a.Before(true, ""); decided {
			t.Errorf("%s: decided %+v without calling the provider", name, o)
		}
	}
}

func TestAfterClassifiesWhatTheProviderAnswered(t *testing.T) {
	conflict := &accounts.ConflictError{ID: "uid=ada", Reason: "is not owned by this request"}
	config := &accounts.ConfigError{Msg: "usersDN unreadable"}
	down := errors.New("dial tcp: connection refused")
	creds := &itmv1.ObjectReference{Namespace: "users", Name: "ada-kubeconfig"}
	renew := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	provisioned := rec(itmv1.AccountStateProvisioned, "uid=ada", "")
	ok := Call{ID: "uid=ada", Credentials: creds, RenewAt: renew}
	cases := []outcomeCase{
		{"enabled: provisioned",
			acct(WantEnabled, false, nil).After(ok), Provisioned, rec(itmv1.AccountStateProvisioned, "uid=ada", ""), "", false},
		{"disabled: created disabled",
			acct(WantDisabled, false, nil).After(ok), Provisioned, rec(itmv1.AccountStateDisabled, "uid=ada", "created disabled until spec.startDate"), "", false},
		{"a group someone else owns: account in place, Permanent",
			acct(WantEnabled, false, nil).After(Call{ID: "uid=ada", Credentials: creds, Step: StepGroups, Err: conflict}), Permanent,
			rec(itmv1.AccountStateProvisioned, "uid=ada", "uid=ada is not owned by this request"), "AccountProvider ldap: uid=ada is not owned by this request", true},
		{"groups failed otherwise: Transient",
			acct(WantEnabled, false, provisioned).After(Call{ID: "uid=ada", Step: StepGroups, Err: down}), Transient,
			rec(itmv1.AccountStateProvisioned, "uid=ada", "dial tcp: connection refused; retrying"), "AccountProvider ldap: dial tcp: connection refused", true},
		{"someone else's account: Permanent, Failed",
			acct(WantEnabled, false, nil).After(Call{Step: StepEnsure, Err: conflict}), Permanent,
			rec(itmv1.AccountStateFailed, "", "uid=ada is not owned by this request"), "AccountProvider ldap: uid=ada is not owned by this request", true},
		{"conflict keeps the recorded ID",
			acct(WantEnabled, false, provisioned).After(Call{Step: StepEnsure, Err: conflict}), Permanent,
			rec(itmv1.AccountStateFailed, "uid=ada", "uid=ada is not owned by this request"), "AccountProvider ldap: uid=ada is not owned by this request", true},
		{"configuration, account never made: Permanent",
			acct(WantEnabled, false, nil).After(Call{Step: StepCheck, Err: config}), Permanent,
			rec(itmv1.AccountStateFailed, "", "usersDN unreadable"), "AccountProvider ldap: usersDN unreadable", true},
		{"configuration, only the record of this same failure: Permanent (stays Failed)",
			acct(WantEnabled, false, rec(itmv1.AccountStateFailed, "", "usersDN unreadable")).After(Call{Step: StepCheck, Err: config}), Permanent,
			rec(itmv1.AccountStateFailed, "", "usersDN unreadable"), "AccountProvider ldap: usersDN unreadable", true},
		{"configuration, account made before: Transient, state kept",
			acct(WantEnabled, false, provisioned).After(Call{Step: StepCheck, Err: config}), Transient,
			rec(itmv1.AccountStateProvisioned, "uid=ada", "usersDN unreadable; retrying"), "AccountProvider ldap: usersDN unreadable", true},
		{"unreachable, no record: Transient, Failed without ID",
			acct(WantEnabled, false, nil).After(Call{Step: StepOpen, Err: down}), Transient,
			rec(itmv1.AccountStateFailed, "", "dial tcp: connection refused; retrying"), "AccountProvider ldap: dial tcp: connection refused", true},
		{"offboarding, someone else's account: nothing to undo",
			acct(WantGone, false, provisioned).After(Call{Step: StepObserve, Err: conflict}), Provisioned,
			rec(itmv1.AccountStateFailed, "uid=ada", "uid=ada is not owned by this request; nothing of this request's to undo"), "", false},
		{"offboarding, someone else's account, no record: nothing recorded",
			acct(WantGone, false, nil).After(Call{Step: StepObserve, Err: conflict}), Provisioned, nil, "", false},
		{"offboarding, unreachable: Blocked, record kept",
			acct(WantGone, false, provisioned).After(Call{Step: StepObserve, Err: down}), Blocked,
			rec(itmv1.AccountStateProvisioned, "uid=ada", "dial tcp: connection refused"), "AccountProvider ldap: dial tcp: connection refused", true},
		{"offboarding, a conflict past Observe blocks too",
			acct(WantGone, false, provisioned).After(Call{ID: "uid=ada", Exists: true, Step: StepGroups, Err: conflict}), Blocked,
			rec(itmv1.AccountStateProvisioned, "uid=ada", "uid=ada is not owned by this request"), "AccountProvider ldap: uid=ada is not owned by this request", true},
		{"offboarding, unreachable, force: Skipped",
			acct(WantGone, true, provisioned).After(Call{Step: StepOpen, Err: down}), Skipped,
			rec(itmv1.AccountStateFailed, "uid=ada", "not undone, skipped by itmanager.io/force-offboard: dial tcp: connection refused"), "", true},
		{"offboarding, gone already: Deleted under the recorded ID",
			acct(WantGone, false, provisioned).After(Call{}), Provisioned, rec(itmv1.AccountStateDeleted, "uid=ada", ""), "", false},
		{"offboarding, never made: nothing recorded",
			acct(WantGone, false, nil).After(Call{}), Provisioned, nil, "", false},
		{"offboarding, deleted",
			acct(WantGone, false, nil).After(Call{ID: "uid=found", Exists: true, Deleted: true}), Provisioned, rec(itmv1.AccountStateDeleted, "uid=found", ""), "", false},
		{"offboarding, delete failed: Blocked",
			acct(WantGone, false, nil).After(Call{ID: "uid=found", Exists: true, Deleted: true, Step: StepDelete, Err: down}), Blocked,
			rec(itmv1.AccountStateFailed, "", "dial tcp: connection refused"), "AccountProvider ldap: dial tcp: connection refused", true},
		{"offboarding, disabled",
			acct(WantGone, false, provisioned).After(Call{ID: "uid=found", Exists: true}), Provisioned, rec(itmv1.AccountStateDisabled, "uid=found", ""), "", false},
	}
	for _, c := range cases {
		c.check(t)
	}
	// Credentials come only with an enabled account, a group conflict
	// included.
	for name, tc := range map[string]struct {
		o    Outcome
		want bool
	}{
		"enabled":                 {acct(WantEnabled, false, nil).After(ok), true},
		"enabled, group conflict": {acct(WantEnabled, false, nil).After(Call{ID: "a", Credentials: creds, RenewAt: renew, Step: StepGroups, Err: conflict}), true},
		"disabled":                {acct(WantDisabled, false, nil).After(ok), false},
		"failed":                  {acct(WantEnabled, false, nil).After(Call{Credentials: creds, RenewAt: renew, Step: StepGroups, Err: down}), false},
	} {
		if got := tc.o.Credentials != nil && tc.o.RenewAt.Equal(renew); got != tc.want {
			t.Errorf("%s: credentials %v renewAt %v, want them: %v", name, tc.o.Credentials, tc.o.RenewAt, tc.want)
		}
	}
}

func TestAccountMessagesAreBounded(t *testing.T) {
	o := acct(WantEnabled, false, nil).After(Call{Step: StepOpen, Err: fmt.Errorf("%s", strings.Repeat("x", 5000))})
	if n := len(o.Record.Message); n > MaxAccountMessage {
		t.Fatalf("message %d bytes, limit %d", n, MaxAccountMessage)
	}
}

func TestPassAddSortsOutcomesIntoTheirLists(t *testing.T) {
	a, b := &itmv1.ObjectReference{Name: "a"}, &itmv1.ObjectReference{Name: "b"}
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var p Pass
	for _, o := range []Outcome{
		{Provider: "p1", Class: Provisioned, Record: rec(itmv1.AccountStateProvisioned, "1", ""), Credentials: a, RenewAt: t1.Add(time.Hour)},
		{Provider: "p2", Class: Provisioned, Credentials: b, RenewAt: t1},
		{Provider: "p3", Class: Missing},
		{Provider: "p4", Class: Skipped},
		{Provider: "p5", Class: Blocked, Problem: "blocked"},
		{Provider: "p6", Class: Permanent, Problem: "permanent"},
		{Provider: "p7", Class: Transient, Problem: "transient"},
		{Provider: "p8", Class: Kept},
	} {
		p.Add(o)
	}
	want := Pass{Accounts: []itmv1.AccountStatus{*rec(itmv1.AccountStateProvisioned, "1", "")}, Credentials: a, RenewAt: t1,
		Missing: []string{"p3"}, Skipped: []string{"p4"}, Blocked: []string{"blocked"}, Permanent: []string{"permanent"}, Transient: []string{"transient"}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Pass = %+v\nwant %+v", p, want)
	}
}

func TestPassFailingRetriesTransientAndBlockedUnlessForced(t *testing.T) {
	for name, tc := range map[string]struct {
		p    Pass
		want bool
	}{
		"nothing":           {Pass{}, false},
		"permanent waits":   {Pass{Permanent: []string{"x"}}, false},
		"missing waits":     {Pass{Missing: []string{"x"}}, false},
		"transient":         {Pass{Transient: []string{"x"}}, true},
		"blocked":           {Pass{Blocked: []string{"x"}}, true},
		"blocked, forced":   {Pass{Blocked: []string{"x"}, Force: true}, false},
		"transient, forced": {Pass{Transient: []string{"x"}, Force: true}, true},
	} {
		if got := tc.p.Failing(); got != tc.want {
			t.Errorf("%s: Failing = %v, want %v", name, got, tc.want)
		}
	}
}
