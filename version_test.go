package main

import (
	"testing"

	"github.com/itmanager-io/itmanager/internal/version/versiontest"
)

// TestVersionFlagPrintsTheVersionAndExits: --version prints one line and
// exits 0 before the flags are validated or anything starts (no
// kubeconfig, no servers).
func TestVersionFlagPrintsTheVersionAndExits(t *testing.T) {
	out := versiontest.Main(t, main, "--version", "--workers=0")
	if !versiontest.Line("manager").MatchString(out) {
		t.Errorf("--version printed %q", out)
	}
}
