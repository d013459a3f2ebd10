package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentLinksNoKubernetesClient: the agent runs on every managed device
// and speaks only the check-in protocol (internal/checkin/wire); linking the
// service (internal/checkin) drags in client-go, controller-runtime and
// Prometheus, about 20 MB of binary it never runs, and linking the API types
// (api/v1alpha1) drags in apimachinery and klog.
func TestAgentLinksNoKubernetesClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"k8s.io/client-go/", "sigs.k8s.io/controller-runtime", "github.com/prometheus/",
			"k8s.io/apimachinery/", "github.com/itmanager-io/itmanager/api/",
		} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("the agent links %s", pkg)
			}
		}
		if pkg == "github.com/itmanager-io/itmanager/internal/checkin" {
			t.Errorf("the agent links %s; it needs only internal/checkin/wire", pkg)
		}
	}
}

// TestVersionFlagPrintsTheLinkedVersionAndCommit: the agent built with the
// release's ldflags prints exactly what they stamped, and exits 0, so the
// Makefile's -X paths and the flag are checked together.
func TestVersionFlagPrintsTheLinkedVersionAndCommit(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "itmanager-agent")
	const pkg = "github.com/itmanager-io/itmanager/internal/version"
	build := exec.Command("go", "build", "-ldflags", "-X "+pkg+".Version=v9.9.9-test -X "+pkg+".Commit=abc1234", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if got, want := string(out), "itmanager-agent v9.9.9-test (commit abc1234)\n"; got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}
