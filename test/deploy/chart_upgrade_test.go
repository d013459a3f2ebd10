package deploy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

// writeKubeconfig is a kubeconfig file for cfg, for helm.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"test": {Server: cfg.Host, CertificateAuthorityData: cfg.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"test": {ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}},
		Contexts:       map[string]*clientcmdapi.Context{"test": {Cluster: "test", AuthInfo: "test"}},
		CurrentContext: "test",
	}, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// TestUpgradeFromChart01TakesOverTheCRDsOnlyWithTakeOwnership: chart
// 0.1.x shipped the CRDs in crds/, which helm creates as they are, with
// none of its ownership metadata, and lists in no release; from 0.2.0 they
// are templates. The test's API server starts with exactly that: the CRDs
// of config/crd/bases (what crds/ held), created without Helm's labels or
// annotations, and a release of the chart that does not render them
// (crds.install=false stands in for the CRD-less templates of 0.1.x; helm
// cannot wait for Pods here, there is no kubelet, so no --wait). A plain
// helm upgrade then fails on the CRDs' ownership metadata (so
// docs/install.md's "Upgrading from chart 0.1.x" is needed), and
// helm upgrade --take-ownership succeeds and leaves every CRD owned by the
// release and kept on uninstall.
func TestUpgradeFromChart01TakesOverTheCRDsOnlyWithTakeOwnership(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kubeconfig := writeKubeconfig(t, env.Config)
	chart := filepath.Join(root, "charts", "itmanager")
	helm := func(args ...string) ([]byte, error) {
		return runHelm(t, root, append(args, "--kubeconfig", kubeconfig, "--namespace", namespace)...)
	}
	crds := func() []apiextensionsv1.CustomResourceDefinition {
		list := &apiextensionsv1.CustomResourceDefinitionList{}
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		var ours []apiextensionsv1.CustomResourceDefinition
		for _, crd := range list.Items {
			if crd.Spec.Group == "itmanager.io" {
				ours = append(ours, crd)
			}
		}
		return ours
	}

	before := crds()
	if len(before) == 0 {
		t.Fatal("the test API server serves no itmanager.io CRDs")
	}
	for _, crd := range before {
		if _, ok := crd.Labels["app.kubernetes.io/managed-by"]; ok {
			t.Fatalf("CRD %s already carries Helm's label (%v): not what crds/ leaves", crd.Name, crd.Labels)
		}
	}

	if out, err := helm("install", "itmanager", chart, "--create-namespace", "--set", "crds.install=false"); err != nil {
		t.Fatalf("helm install (the CRDs not in the release, as 0.1.x): %v\n%s", err, out)
	}

	// The chart's default, which 0.1.x's values (no crds.*) leave as it is;
	// helm upgrade without values would reuse crds.install=false.
	install := []string{"--set", "crds.install=true"}
	_, err = helm(append([]string{"upgrade", "itmanager", chart}, install...)...)
	if err == nil {
		t.Fatal("helm upgrade without --take-ownership adopted CRDs that crds/ installed: the upgrade section of docs/install.md is wrong")
	}
	if msg := err.Error(); !strings.Contains(msg, "invalid ownership metadata") || !strings.Contains(msg, "CustomResourceDefinition") {
		t.Errorf("helm upgrade without --take-ownership failed for another reason than the CRDs' ownership: %v", err)
	}

	if out, err := helm(append([]string{"upgrade", "itmanager", chart, "--take-ownership"}, install...)...); err != nil {
		t.Fatalf("helm upgrade --take-ownership: %v\n%s", err, out)
	}
	after := crds()
	if len(after) != len(before) {
		t.Errorf("%d itmanager.io CRDs after the upgrade, %d before", len(after), len(before))
	}
	for _, crd := range after {
		if crd.Labels["app.kubernetes.io/managed-by"] != "Helm" ||
			crd.Annotations["meta.helm.sh/release-name"] != "itmanager" || crd.Annotations["meta.helm.sh/release-namespace"] != namespace {
			t.Errorf("CRD %s is not owned by the release after --take-ownership: labels %v, annotations %v", crd.Name, crd.Labels, crd.Annotations)
		}
		if crd.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep after the upgrade (annotations %v)", crd.Name, crd.Annotations)
		}
	}

	// From now on a plain upgrade works: the release owns them.
	if out, err := helm("upgrade", "itmanager", chart, "--reuse-values"); err != nil {
		t.Fatalf("a later helm upgrade without --take-ownership: %v\n%s", err, out)
	}
}
