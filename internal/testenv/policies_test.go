package testenv

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestBindPolicyCoversEveryEntry guards the per-index validations of the
// AccessPolicy bind policy: one for each spec.kubernetesAccess entry the CRD
// allows, so raising maxItems without a new rule cannot open a hole.
func TestBindPolicyCoversEveryEntry(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := ReadObjects(filepath.Join(root, "config", "crd", "bases", "itmanager.io_accesspolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(crds[0].Object, crd); err != nil {
		t.Fatal(err)
	}
	maxItems := *crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["kubernetesAccess"].MaxItems

	objs, err := AdmissionPolicies()
	if err != nil {
		t.Fatal(err)
	}
	var validations []any
	for _, o := range objs {
		if o.GetName() == NamePrefix+"accesspolicy-bind" && o.GetKind() == "ValidatingAdmissionPolicy" {
			validations, _, _ = unstructured.NestedSlice(o.Object, "spec", "validations")
		}
	}
	if int64(len(validations)) != maxItems {
		t.Fatalf("the bind policy has %d validations; spec.kubernetesAccess allows %d entries", len(validations), maxItems)
	}
	for i, v := range validations {
		m := v.(map[string]any)
		idx := fmt.Sprintf("variables.access[%d]", i)
		if !strings.Contains(m["expression"].(string), idx) || !strings.Contains(m["messageExpression"].(string), fmt.Sprintf("spec.kubernetesAccess[%d]", i)) {
			t.Errorf("validation %d does not check entry %d", i, i)
		}
	}
}
