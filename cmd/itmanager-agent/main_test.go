package main

import (
	"os/exec"
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
