package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

func kustomizeBinary(t *testing.T, root string) string {
	t.Helper()
	if k := os.Getenv("KUSTOMIZE"); k != "" {
		return k
	}
	matches, _ := filepath.Glob(filepath.Join(root, "bin", "kustomize-v*"))
	if len(matches) == 0 {
		t.Fatal("no kustomize in bin/; run the tests with make test, which installs the pinned kustomize")
	}
	return matches[0]
}

// TestKustomizeDefaultInstallsIntoARealAPIServer proves make deploy's
// config/default creates cleanly and keeps every generated Role in its own
// namespace (a global namespace transform would move them all).
func TestKustomizeDefaultInstallsIntoARealAPIServer(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kustomizeBinary(t, root), "build", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	objs := decodeAll(t, out)

	c, ctx := apiServer(t)
	for _, obj := range objs {
		if obj.GetKind() == "CustomResourceDefinition" {
			continue // envtest installed them already
		}
		if err := c.Create(ctx, obj); err != nil {
			t.Errorf("create %s %s/%s: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
	}

	generated := decodeAll(t, mustRead(t, filepath.Join(root, "config", "rbac", "role.yaml")))
	for _, g := range generated {
		if g.GetKind() != "Role" {
			continue
		}
		role := &rbacv1.Role{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: g.GetNamespace(), Name: "itmanager-" + g.GetName()}, role); err != nil {
			t.Errorf("Role in %s: %v", g.GetNamespace(), err)
			continue
		}
		if !equality.Semantic.DeepEqual(role.Rules, rulesOf(t, g.Object)) {
			t.Errorf("Role in %s differs from config/rbac/role.yaml", g.GetNamespace())
		}
		binding := &rbacv1.RoleBinding{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: g.GetNamespace(), Name: "itmanager-manager-rolebinding"}, binding); err != nil {
			t.Errorf("RoleBinding in %s: %v", g.GetNamespace(), err)
			continue
		}
		if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
			binding.Subjects[0].Name != "itmanager-controller-manager" || binding.Subjects[0].Namespace != testenv.OperatorNamespace {
			t.Errorf("RoleBinding in %s does not bind %s to the manager: %+v", g.GetNamespace(), role.Name, binding)
		}
	}
}
