package v1alpha1_test

import (
	"os"
	"path/filepath"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// defaultsInAtomicLists lists the spec fields with a schema default inside
// an atomic list: a server-side apply of a manifest that leaves such a
// field out sends a list that differs from the stored (defaulted) one, so
// every re-apply by a GitOps tool is a write.
func defaultsInAtomicLists(s apiextensionsv1.JSONSchemaProps, path string, inAtomic bool, out *[]string) {
	if s.Default != nil && inAtomic {
		*out = append(*out, path)
	}
	if s.Type == "array" && s.Items != nil && s.Items.Schema != nil {
		atomic := s.XListType == nil || *s.XListType == "atomic"
		defaultsInAtomicLists(*s.Items.Schema, path+"[]", inAtomic || atomic, out)
	}
	for name, p := range s.Properties {
		defaultsInAtomicLists(p, path+"."+name, inAtomic, out)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		defaultsInAtomicLists(*s.AdditionalProperties.Schema, path+".*", inAtomic, out)
	}
}

func TestNoSchemaDefaultInsideAnAtomicList(t *testing.T) {
	paths, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no CRDs under config/crd/bases: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Fatal(err)
		}
		for _, v := range crd.Spec.Versions {
			var found []string
			defaultsInAtomicLists(v.Schema.OpenAPIV3Schema.Properties["spec"], crd.Spec.Names.Kind+".spec", false, &found)
			for _, f := range found {
				t.Errorf("%s has a schema default inside an atomic list: re-applying a manifest without it always writes", f)
			}
		}
	}
	// Positive control: the walk finds such a default.
	var found []string
	tcp := apiextensionsv1.JSON{Raw: []byte(`"TCP"`)}
	defaultsInAtomicLists(apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
		Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{"protocol": {Type: "string", Default: &tcp}}}}}, "x", false, &found)
	if len(found) != 1 || found[0] != "x[].protocol" {
		t.Fatalf("the walk missed a default in an atomic list: %v", found)
	}
}
