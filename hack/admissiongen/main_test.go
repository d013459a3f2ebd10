package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestCommittedFileIsFresh fails when config/admission/accesspolicy.yaml is
// not what this program writes (run make manifests).
func TestCommittedFileIsFresh(t *testing.T) {
	if got := string(repoFile(t, "config/admission/accesspolicy.yaml")); got != Generate() {
		t.Fatal("config/admission/accesspolicy.yaml is stale: run make manifests")
	}
}

// TestCountsFollowTheCRD keeps the per-index rules in step with the CRD's
// bounds: raising a limit without more rules would leave entries unchecked.
func TestCountsFollowTheCRD(t *testing.T) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(repoFile(t, "config/crd/bases/itmanager.io_accesspolicies.yaml"), crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	if got := *spec.Properties["kubernetesAccess"].MaxItems; got != BindEntries {
		t.Errorf("spec.kubernetesAccess allows %d entries; the bind policy checks %d", got, BindEntries)
	}
	if NamedNamespaces != itmv1.MaxNamedDestinationNamespaces {
		t.Errorf("NamedNamespaces = %d, api MaxNamedDestinationNamespaces = %d", NamedNamespaces, itmv1.MaxNamedDestinationNamespaces)
	}
	want := fmt.Sprintf(".sum() <= %d", NamedNamespaces)
	found := false
	for _, r := range spec.XValidations {
		found = found || strings.Contains(r.Rule, "d.namespaces") && strings.HasSuffix(r.Rule, want)
	}
	if !found {
		t.Errorf("the CRD has no rule capping the named destination namespaces at %d (%q)", NamedNamespaces, want)
	}
}

// TestEveryIndexIsChecked reads the generated policies back: every
// kubernetesAccess entry and every checked namespace has its rule, and no
// policy makes more authorizer calls than its cost budget allows.
func TestEveryIndexIsChecked(t *testing.T) {
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(Generate()), 4096)
	bind := 0
	var namespaces []int
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if u.GetKind() != "ValidatingAdmissionPolicy" {
			continue
		}
		vals, _, _ := unstructured.NestedSlice(u.Object, "spec", "validations")
		checks := 0
		for _, v := range vals {
			m := v.(map[string]any)
			expr := m["expression"].(string)
			checks += strings.Count(expr, ".check(")
			if u.GetName() == "accesspolicy-bind" {
				if !strings.Contains(expr, fmt.Sprintf("variables.access[%d]", bind)) ||
					!strings.Contains(m["messageExpression"].(string), fmt.Sprintf("spec.kubernetesAccess[%d]", bind)) {
					t.Errorf("bind validation %d does not check entry %d", bind, bind)
				}
				bind++
				continue
			}
			for i := range CheckedNamespaces {
				if strings.Contains(expr, fmt.Sprintf("namespace(variables.namespaces[%d])", i)) {
					namespaces = append(namespaces, i)
				}
			}
		}
		// 350,000 per check of a 10,000,000 budget, with room for the rest.
		if checks*350000 > 8000000 {
			t.Errorf("%s makes up to %d authorizer checks, beyond its cost budget", u.GetName(), checks)
		}
	}
	if bind != BindEntries {
		t.Errorf("bind policy has %d validations, want %d", bind, BindEntries)
	}
	if len(namespaces) != CheckedNamespaces {
		t.Fatalf("%d namespace validations, want %d", len(namespaces), CheckedNamespaces)
	}
	for i, n := range namespaces {
		if n != i {
			t.Fatalf("namespace validation %d checks index %d", i, n)
		}
	}
}
