package main

import (
	"testing"

	"github.com/itmanager-io/itmanager/internal/version/versiontest"
)

// TestVersionFlagPrintsTheVersionAndExits: --version prints one line and
// exits 0 before anything else runs (no kubeconfig, no command).
func TestVersionFlagPrintsTheVersionAndExits(t *testing.T) {
	out := versiontest.Main(t, main, "--version")
	if !versiontest.Line("kubectl-itm").MatchString(out) {
		t.Errorf("--version printed %q", out)
	}
}
