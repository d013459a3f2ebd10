// Package chart tests the deployment manifests (the Helm chart and
// config/default) against a real API server. The chart test renders
// with the pinned helm and creates every object, so a template that renders
// invalid objects, or rules that drift from the generated ones, fail here.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

const namespace = "itmanager-system"

func helmBinary(t *testing.T, root string) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	matches, _ := filepath.Glob(filepath.Join(root, "bin", "helm-v*"))
	if len(matches) == 0 {
		t.Fatal("no helm in bin/; run the tests with make test, which installs the pinned helm")
	}
	return matches[0]
}

func decodeAll(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

func TestChartInstallsIntoARealAPIServer(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(helmBinary(t, root), "template", "itmanager", filepath.Join(root, "charts", "itmanager"),
		"--namespace", namespace, "--kube-version", "1.36.3").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := decodeAll(t, out)
	rendered := decodeAll(t, out) // objs get the server's defaults when created
	// Helm installs into an existing release namespace.
	c, ctx := apiServer(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})

	kinds := map[string]int{}
	for _, obj := range objs {
		if err := install(ctx, c, obj); err != nil {
			t.Errorf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
		kinds[obj.GetKind()]++
		if obj.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s %s lacks the chart's labels", obj.GetKind(), obj.GetName())
		}
	}
	// The admission policies are config/admission's, named as kustomize
	// names them.
	policies, err := testenv.AdmissionPolicies()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range policies {
		found := false
		for _, obj := range rendered {
			if obj.GetKind() == want.GetKind() && obj.GetName() == want.GetName() {
				found = true
				if !equality.Semantic.DeepEqual(asKustomizeNames(t, obj.Object["spec"]), want.Object["spec"]) {
					t.Errorf("chart %s %s differs from config/admission; run make manifests", want.GetKind(), want.GetName())
				}
			}
		}
		if !found {
			t.Errorf("the chart lacks %s %s", want.GetKind(), want.GetName())
		}
	}
	for _, k := range []string{"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Namespace", "Service", "Secret", "ValidatingWebhookConfiguration",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "CustomResourceDefinition", "PodDisruptionBudget"} {
		if kinds[k] == 0 {
			t.Errorf("the chart renders no %s", k)
		}
	}

	t.Run("RBAC is the one generated from the RBAC markers", func(t *testing.T) {
		generated := decodeAll(t, mustRead(t, filepath.Join(root, "config", "rbac", "role.yaml")))
		if len(generated) < 2 {
			t.Fatalf("config/rbac/role.yaml holds %d objects; want a ClusterRole and Roles", len(generated))
		}
		for _, g := range generated {
			var want, got []rbacv1.PolicyRule
			want = rulesOf(t, g.Object)
			var err error
			switch g.GetKind() {
			case "ClusterRole":
				installed := &rbacv1.ClusterRole{}
				err = c.Get(ctx, client.ObjectKey{Name: "itmanager-manager"}, installed)
				got = installed.Rules
			case "Role":
				installed := &rbacv1.Role{}
				err = c.Get(ctx, client.ObjectKey{Namespace: g.GetNamespace(), Name: "itmanager-manager"}, installed)
				got = installed.Rules
			}
			if err != nil {
				t.Errorf("%s in %q: %v", g.GetKind(), g.GetNamespace(), err)
				continue
			}
			if !equality.Semantic.DeepEqual(want, asKustomizeResourceNames(got)) {
				t.Errorf("chart %s in %q differs from config/rbac/role.yaml; run make manifests", g.GetKind(), g.GetNamespace())
			}
		}
	})

	t.Run("webhooks are the generated ones, pointed at the Service, their CA left to the manager", func(t *testing.T) {
		generated := readTyped[admissionregistrationv1.ValidatingWebhookConfiguration](t, filepath.Join(root, "config", "webhook", "manifests.yaml"))
		installed := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := c.Get(ctx, client.ObjectKey{Name: "itmanager"}, installed); err != nil {
			t.Fatal(err)
		}
		if len(installed.Webhooks) != len(generated.Webhooks) {
			t.Fatalf("chart has %d webhooks, markers declare %d", len(installed.Webhooks), len(generated.Webhooks))
		}
		for i, w := range installed.Webhooks {
			g := generated.Webhooks[i]
			for j := range g.Rules {
				if g.Rules[j].Scope == nil { // the API server defaults it
					all := admissionregistrationv1.AllScopes
					g.Rules[j].Scope = &all
				}
			}
			if w.Name != g.Name || !equality.Semantic.DeepEqual(w.Rules, g.Rules) || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*w.FailurePolicy != admissionregistrationv1.Fail {
				t.Errorf("webhook %d (%s) differs from the generated %s", i, w.Name, g.Name)
			}
			if w.ClientConfig.Service == nil || w.ClientConfig.Service.Name != "itmanager-webhook" || w.ClientConfig.Service.Namespace != namespace ||
				*w.ClientConfig.Service.Path != *g.ClientConfig.Service.Path {
				t.Errorf("webhook %s does not point at the chart's Service: %+v", w.Name, w.ClientConfig.Service)
			}
			if len(w.ClientConfig.CABundle) != 0 {
				t.Errorf("webhook %s renders a CA bundle; the manager injects it", w.Name)
			}
		}
	})

	t.Run("the manager rotates the webhook certificate in the empty Secret, for the Service and configuration rendered", func(t *testing.T) {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "itmanager-webhook-server-cert"}, secret); err != nil {
			t.Fatal(err)
		}
		if secret.Type != corev1.SecretTypeOpaque || len(secret.Data) != 0 {
			t.Errorf("the Secret is %s with %d keys; want Opaque and empty (the manager fills it)", secret.Type, len(secret.Data))
		}
		args := managerArgs(t, rendered)
		for _, want := range []string{"--webhook-cert-secret=itmanager-webhook-server-cert", "--webhook-service-name=itmanager-webhook",
			"--webhook-configuration-name=itmanager", "--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs"} {
			if !slices.Contains(args, want) {
				t.Errorf("the manager lacks %s: %v", want, args)
			}
		}
		deployment := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "itmanager"}, deployment); err != nil {
			t.Fatal(err)
		}
		for _, v := range deployment.Spec.Template.Spec.Volumes {
			if v.Name == "webhook-cert" && (v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory) {
				t.Errorf("the certificate directory is %+v; want an emptyDir in memory the manager writes", v.VolumeSource)
			}
		}
	})
}

// TestChartWithCertManagerLeavesTheCertificateToIt: a Certificate for the
// Service's names from the issuer given, mounted into the manager, its CA
// injected by cert-manager; no rotation by the manager and no empty Secret.
func TestChartWithCertManagerLeavesTheCertificateToIt(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, helmTemplate(t, root, "--set", "webhook.certManager.enabled=true",
		"--set", "webhook.certManager.issuerRef.name=ca", "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer"))
	var certificate, configuration *unstructured.Unstructured
	for _, obj := range objs {
		switch {
		case obj.GetKind() == "Certificate":
			certificate = obj
		case obj.GetKind() == "ValidatingWebhookConfiguration":
			configuration = obj
		case obj.GetKind() == "Secret" && obj.GetName() == "itmanager-webhook-server-cert":
			t.Error("the chart renders the manager's empty Secret with cert-manager")
		}
	}
	if certificate == nil || configuration == nil {
		t.Fatalf("Certificate %v, configuration %v", certificate != nil, configuration != nil)
	}
	secretName, _, _ := unstructured.NestedString(certificate.Object, "spec", "secretName")
	dnsNames, _, _ := unstructured.NestedStringSlice(certificate.Object, "spec", "dnsNames")
	issuer, _, _ := unstructured.NestedString(certificate.Object, "spec", "issuerRef", "name")
	if secretName != "itmanager-webhook-cert" || !slices.Contains(dnsNames, "itmanager-webhook."+namespace+".svc") || issuer != "ca" {
		t.Errorf("Certificate: secret %q, names %v, issuer %q", secretName, dnsNames, issuer)
	}
	if got := configuration.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != namespace+"/itmanager-webhook-cert" {
		t.Errorf("inject-ca-from is %q", got)
	}
	for _, arg := range managerArgs(t, objs) {
		if strings.HasPrefix(arg, "--webhook-cert-secret") {
			t.Errorf("the manager rotates a certificate too: %s", arg)
		}
	}
	deployment := typedOf[appsv1.Deployment](t, objs, "Deployment", "itmanager")
	mounted := false
	for _, v := range deployment.Spec.Template.Spec.Volumes {
		mounted = mounted || (v.Name == "webhook-cert" && v.Secret != nil && v.Secret.SecretName == "itmanager-webhook-cert")
	}
	if !mounted {
		t.Error("the manager does not mount cert-manager's Secret")
	}
}

func helmTemplate(t *testing.T, root string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(helmBinary(t, root), append([]string{"template", "itmanager", filepath.Join(root, "charts", "itmanager"),
		"--namespace", namespace, "--kube-version", "1.36.3"}, args...)...).Output()
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	return out
}

func typedOf[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	for _, obj := range objs {
		if obj.GetKind() == kind && obj.GetName() == name {
			out := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// managerArgs are the rendered manager container's arguments.
func managerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	for _, c := range typedOf[appsv1.Deployment](t, objs, "Deployment", "itmanager").Spec.Template.Spec.Containers {
		if c.Name == "manager" {
			return c.Args
		}
	}
	t.Fatal("no manager container")
	return nil
}

// asKustomizeResourceNames maps the chart's names of the objects a rule
// names back to config/default's (hack/chartrbac maps them the other way):
// the release "itmanager" calls its webhook configuration "itmanager".
func asKustomizeResourceNames(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		r.ResourceNames = slices.Clone(r.ResourceNames)
		for j, name := range r.ResourceNames {
			if name == "itmanager" && slices.Contains(r.Resources, "validatingwebhookconfigurations") {
				r.ResourceNames[j] = "itmanager-validating-webhook-configuration"
			}
		}
		out[i] = r
	}
	return out
}

// install creates obj as helm install would. The test API server serves
// itmanager's CRDs already (from config/crd/bases), so a rendered CRD is
// applied over them instead: the server still validates it whole, and
// TestChartCRDsAreTheGeneratedOnesKeptAndOptional checks it equals the generated one.
func install(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	if obj.GetKind() == "CustomResourceDefinition" {
		return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()), client.ForceOwnership, client.FieldOwner("helm"))
	}
	return c.Create(ctx, obj)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func rulesOf(t *testing.T, obj map[string]any) []rbacv1.PolicyRule {
	t.Helper()
	role := &rbacv1.ClusterRole{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

// apiServer starts an API server with itmanager's CRDs and creates first.
func apiServer(t *testing.T, first ...client.Object) (client.Client, context.Context) {
	t.Helper()
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, obj := range first {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	return c, ctx
}

func readTyped[T any](t *testing.T, path string) *T {
	t.Helper()
	objs := decodeAll(t, mustRead(t, path))
	if len(objs) != 1 {
		t.Fatalf("%s: want one object, found %d", path, len(objs))
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[0].Object, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// asKustomizeNames maps the identities a chart policy names back to
// config/default's: the release "itmanager" calls the manager's
// ServiceAccount "itmanager", kustomize "itmanager-controller-manager".
func asKustomizeNames(t *testing.T, spec any) any {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	// The release's name ends where a name character does not follow (a
	// quote in an expression, a parenthesis in a message); itmanager-checkin
	// is another identity.
	manager := regexp.MustCompile(`system:serviceaccount:` + namespace + `:itmanager([^-a-z0-9.])`)
	data = manager.ReplaceAll(data, []byte("system:serviceaccount:"+namespace+":"+testenv.ManagerServiceAccount+"$1"))
	var out any
	if err := utiljson.Unmarshal(data, &out); err != nil { // integers stay int64, as decoded YAML has them
		t.Fatal(err)
	}
	return out
}
