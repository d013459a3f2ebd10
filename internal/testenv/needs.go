package testenv

import (
	"fmt"
	"os"
)

// UnitOnlyEnv, when set (make test-unit sets it), makes Start and StartLDAP
// fail at once. A test that needs a control plane or slapd is an integration
// test: its file carries the integration build tag (or it lives in
// controllers/, api/ or test/), so only make test runs it; a run of
// make test-unit that reaches a server is a test in the wrong place.
const UnitOnlyEnv = "ITMANAGER_UNIT_ONLY"

// refuseInUnitRun is the error Start and StartLDAP return in a unit-only
// run, naming what the test needs.
func refuseInUnitRun(needs string) error {
	if os.Getenv(UnitOnlyEnv) == "" {
		return nil
	}
	return fmt.Errorf("this test needs %s, but %s is set (make test-unit runs pure tests only): "+
		"give its file the integration build tag (//go:build integration) so that make test runs it", needs, UnitOnlyEnv)
}
