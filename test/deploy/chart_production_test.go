package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/itmanager-io/itmanager/internal/nodeupgrade"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// allOptions is a values file that sets every value of the chart away from
// its default (a new value belongs there too).
const allOptions = "testdata/all-options.yaml"

// render runs helm template of the chart with args; the error carries
// helm's stderr (where a schema violation is named).
func render(t *testing.T, root string, args ...string) ([]byte, error) {
	t.Helper()
	return runHelm(t, root, append([]string{"template", "itmanager", filepath.Join(root, "charts", "itmanager"),
		"--namespace", namespace, "--kube-version", "1.36.3"}, args...)...)
}

func runHelm(t *testing.T, root string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t, root), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, errors.New(strings.TrimSpace(stderr.String()) + " (" + err.Error() + ")")
	}
	return out, nil
}

func mustRender(t *testing.T, root string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := render(t, root, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	return decodeAll(t, out)
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func named(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart renders no %s %s", kind, name)
	return nil
}

func TestChartLintsStrictWithDefaultsAndEveryOption(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{"defaults": nil, "every option": {"-f", allOptions}} {
		t.Run(name, func(t *testing.T) {
			if out, err := runHelm(t, root, append([]string{"lint", "--strict", filepath.Join(root, "charts", "itmanager")}, args...)...); err != nil {
				t.Errorf("helm lint --strict: %v\n%s", err, out)
			}
		})
	}
}

// TestEveryOptionFileSetsEveryValue keeps testdata/all-options.yaml
// complete: every value of values.yaml is set there, so the every-option
// render, lint and install cover a value added later.
func TestEveryOptionFileSetsEveryValue(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var defaults, all map[string]any
	if err := sigsyaml.Unmarshal(mustRead(t, filepath.Join(root, "charts", "itmanager", "values.yaml")), &defaults); err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal(mustRead(t, allOptions), &all); err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, want, got map[string]any)
	walk = func(prefix string, want, got map[string]any) {
		for k, v := range want {
			g, ok := got[k]
			if !ok {
				t.Errorf("%s sets no %s%s", allOptions, prefix, k)
				continue
			}
			if sub, isMap := v.(map[string]any); isMap && len(sub) > 0 {
				gsub, _ := g.(map[string]any)
				walk(prefix+k+".", sub, gsub)
			}
		}
	}
	walk("", defaults, all)
}

// TestChartValuesSchemaRefusesMistakes: a misspelt or ill-typed value
// fails helm template (and so install and lint) with a message naming it,
// at every level of values.yaml, instead of being silently ignored.
func TestChartValuesSchemaRefusesMistakes(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		set, want string
	}{
		{"replicaCont=3", "replicaCont"},
		{"checkin.service.tpye=LoadBalancer", "tpye"},
		{"crds.instal=false", "instal"},
		{"podDisruptionBudget.minAvailabe=1", "minAvailabe"},
		{"securityContext.runAsNonroot=true", "runAsNonroot"},
		{"checkin.podSecurityContext.seccompProfile.typ=RuntimeDefault", "typ"},
		{"webhook.certManager.issuerRef.nme=ca", "nme"},
		{"image.digest=sha256:abc", "/image/digest"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"checkin.service.type=ExternalName", "/checkin/service/type"},
		{"checkin.service.externalTrafficPolicy=local", "/checkin/service/externalTrafficPolicy"},
		{"checkin.service.clusterIP=checkin", "/checkin/service/clusterIP"},
		{"checkin.staleAfter=5 minutes", "/checkin/staleAfter"},
		{"checkin.certManager.enabled=true", "/checkin/certSecret"},
		{"checkin.certManager.enabled=true", "/checkin/certManager/issuerRef"},
		{"podDisruptionBudget.maxUnavailable=one", "/podDisruptionBudget/maxUnavailable"},
		{"topologySpreadConstraints[0].whenUnsatisfiable=Never", "/topologySpreadConstraints/0/whenUnsatisfiable"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, err := render(t, root, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template --set %s: %v; want a schema error naming %q", tc.set, err, tc.want)
			}
		})
	}
	t.Run("both minAvailable and maxUnavailable", func(t *testing.T) {
		_, err := render(t, root, "--set", "podDisruptionBudget.minAvailable=1", "--set", "podDisruptionBudget.maxUnavailable=1")
		if err == nil {
			t.Error("a PodDisruptionBudget with minAvailable and maxUnavailable rendered")
		}
	})
}

// TestChartCRDsAreTheGeneratedOnesKeptAndOptional: the CRDs are templates
// (so helm upgrade updates them) equal to config/crd/bases, labelled as the
// chart's, kept by helm uninstall unless crds.keep=false, and absent with
// crds.install=false.
func TestChartCRDsAreTheGeneratedOnesKeptAndOptional(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "charts", "itmanager", "crds")); !os.IsNotExist(err) {
		t.Errorf("charts/itmanager/crds exists (%v): helm installs crds/ once and never upgrades it", err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	generated := map[string]apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		crd := readTyped[apiextensionsv1.CustomResourceDefinition](t, f)
		generated[crd.Name] = *crd
	}

	crds := ofKind(mustRender(t, root), "CustomResourceDefinition")
	if len(crds) != len(generated) {
		t.Fatalf("the chart renders %d CRDs, config/crd/bases has %d", len(crds), len(generated))
	}
	for _, obj := range crds {
		crd := typed[apiextensionsv1.CustomResourceDefinition](t, obj)
		want, ok := generated[crd.Name]
		if !ok {
			t.Errorf("the chart renders CRD %s, which config/crd/bases lacks", crd.Name)
			continue
		}
		if !equality.Semantic.DeepEqual(crd.Spec, want.Spec) {
			t.Errorf("CRD %s differs from config/crd/bases; run make manifests", crd.Name)
		}
		if crd.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep (annotations %v)", crd.Name, crd.Annotations)
		}
		if crd.Labels["app.kubernetes.io/managed-by"] != "Helm" || crd.Labels["app.kubernetes.io/instance"] != "itmanager" {
			t.Errorf("CRD %s lacks the chart's labels: %v", crd.Name, crd.Labels)
		}
	}

	for _, obj := range ofKind(mustRender(t, root, "--set", "crds.keep=false"), "CustomResourceDefinition") {
		if _, ok := obj.GetAnnotations()["helm.sh/resource-policy"]; ok {
			t.Errorf("crds.keep=false: CRD %s still carries helm.sh/resource-policy", obj.GetName())
		}
	}
	if n := len(ofKind(mustRender(t, root, "--set", "crds.install=false"), "CustomResourceDefinition")); n != 0 {
		t.Errorf("crds.install=false still renders %d CRDs", n)
	}
}

// TestChartNamespacesCarryPodSecurityLabels: every namespace the chart
// creates says its Pod Security level at every mode, and only the devices
// namespace is kept by helm uninstall: the devices namespace restricted (no pod belongs there), the upgrades namespace privileged
// (node upgrade Jobs run privileged there by design, DESIGN §3).
func TestChartNamespacesCarryPodSecurityLabels(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args             []string
		devices, upgrade string
	}{
		"defaults":     {devices: testenv.DevicesNamespace, upgrade: testenv.UpgradesNamespace},
		"every option": {args: []string{"-f", allOptions}, devices: "fleet-devices", upgrade: "fleet-upgrades"},
	} {
		t.Run(name, func(t *testing.T) {
			want := map[string]string{tc.devices: "restricted", tc.upgrade: "privileged"}
			namespaces := ofKind(mustRender(t, root, tc.args...), "Namespace")
			if len(namespaces) != len(want) {
				t.Errorf("the chart creates %d namespaces, want %d (%v)", len(namespaces), len(want), want)
			}
			for _, ns := range namespaces {
				level, ok := want[ns.GetName()]
				if !ok {
					t.Errorf("the chart creates namespace %s, which this test does not know: give it Pod Security labels and add it here", ns.GetName())
					continue
				}
				for _, mode := range []string{"enforce", "audit", "warn"} {
					if got := ns.GetLabels()["pod-security.kubernetes.io/"+mode]; got != level {
						t.Errorf("namespace %s: pod-security.kubernetes.io/%s=%q, want %q", ns.GetName(), mode, got, level)
					}
				}
				// The enrolment Secrets and Leases outlive an uninstall
				// (agents hold tokens for them); the upgrades namespace not.
				if keep := ns.GetAnnotations()["helm.sh/resource-policy"] == "keep"; keep != (ns.GetName() == tc.devices) {
					t.Errorf("namespace %s: kept by helm uninstall is %t, want %t", ns.GetName(), keep, ns.GetName() == tc.devices)
				}
			}
		})
	}
}

// podSpecs returns every Pod spec in objs (Pods, and the templates of
// workloads and CronJobs), named by their object.
func podSpecs(t *testing.T, objs []*unstructured.Unstructured) map[string]corev1.PodSpec {
	t.Helper()
	out := map[string]corev1.PodSpec{}
	for _, obj := range objs {
		var path []string
		switch obj.GetKind() {
		case "Pod":
			path = []string{"spec"}
		case "CronJob":
			path = []string{"spec", "jobTemplate", "spec", "template", "spec"}
		default:
			path = []string{"spec", "template", "spec"}
		}
		raw, found, err := unstructured.NestedMap(obj.Object, path...)
		if err != nil || !found {
			continue
		}
		if _, ok := raw["containers"]; !ok {
			continue
		}
		spec := typed[corev1.PodSpec](t, &unstructured.Unstructured{Object: raw})
		out[obj.GetKind()+" "+obj.GetName()] = spec
	}
	return out
}

// restrictedViolations lists how spec breaks the Pod Security restricted
// profile at the latest version, as the API server's PodSecurity admission
// evaluates it (k8s.io/pod-security-admission's own checks), and the
// chart's read-only root filesystem, which the profile does not ask for;
// empty when both hold.
func restrictedViolations(t *testing.T, spec corev1.PodSpec) []string {
	t.Helper()
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	var bad []string
	for _, r := range evaluator.EvaluatePod(restricted, &metav1.ObjectMeta{}, &spec) {
		if !r.Allowed {
			bad = append(bad, r.ForbiddenReason+" ("+r.ForbiddenDetail+")")
		}
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad = append(bad, "container "+c.Name+": root filesystem is writable")
		}
	}
	return bad
}

// TestEveryPodTheChartRendersMeetsTheRestrictedProfile walks every Pod
// spec the chart renders, with defaults and with every option, and
// evaluates each with Pod Security admission's own evaluator at level
// restricted, version latest (non-root, seccomp RuntimeDefault, no
// privilege escalation, every capability dropped, no host namespaces,
// ports or paths, ...), plus a read-only root filesystem.
func TestEveryPodTheChartRendersMeetsTheRestrictedProfile(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{"defaults": nil, "every option": {"-f", allOptions}} {
		t.Run(name, func(t *testing.T) {
			specs := podSpecs(t, mustRender(t, root, args...))
			if len(specs) < 2 {
				t.Fatalf("found %d Pod specs, want the manager's and the check-in service's at least: %v", len(specs), specs)
			}
			for obj, spec := range specs {
				for _, v := range restrictedViolations(t, spec) {
					t.Errorf("%s: %s", obj, v)
				}
			}
		})
	}
	t.Run("the check itself refuses a privileged override", func(t *testing.T) {
		specs := podSpecs(t, mustRender(t, root, "--set", "securityContext.allowPrivilegeEscalation=true",
			"--set", "podSecurityContext.runAsNonRoot=false", "--set", "securityContext.capabilities.drop=null",
			"--set", "securityContext.readOnlyRootFilesystem=false"))
		bad := restrictedViolations(t, specs["Deployment itmanager"])
		for _, want := range []string{"allowPrivilegeEscalation != false", "runAsNonRoot != true", "unrestricted capabilities", "root filesystem is writable"} {
			if !slices.ContainsFunc(bad, func(v string) bool { return strings.Contains(v, want) }) {
				t.Errorf("an escalating, root, all-capabilities, writable manager is not refused for %q: %v", want, bad)
			}
		}
	})
}

// TestChartRendersIdenticallyTwice: nothing in the chart is generated at
// render time (no genCA, no lookup: the manager rotates the webhook
// certificate), so a GitOps tool that renders it on every sync (Argo CD runs
// helm template) finds nothing to change and no CA or key is in it.
func TestChartRendersIdenticallyTwice(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"defaults":                              nil,
		"webhook certificate from cert-manager": {"--set", "webhook.certManager.enabled=true", "--set", "webhook.certManager.issuerRef.name=ca"},
		"every option":                          {"-f", allOptions},
	} {
		t.Run(name, func(t *testing.T) {
			first, err := render(t, root, args...)
			if err != nil {
				t.Fatal(err)
			}
			second, err := render(t, root, args...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, second) {
				t.Errorf("two renders differ:\n%s", firstDifference(first, second))
			}
			if bytes.Contains(first, []byte("caBundle")) || bytes.Contains(first, []byte("BEGIN ")) {
				t.Error("the rendered chart carries a CA bundle or key material")
			}
		})
	}
}

func firstDifference(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: %s\n    vs: %s", i+1, al[i], bl[i])
		}
	}
	return "one render is longer"
}

// TestChartWithEveryOptionInstallsIntoARealAPIServer renders every value
// away from its default, creates the result in a real API server (which
// validates each object: a PodDisruptionBudget, Service or spread
// constraint the server refuses fails here) and checks that each option
// reached its object.
func TestChartWithEveryOptionInstallsIntoARealAPIServer(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const release, ns = "itm", "fleet-system"
	out, err := runHelm(t, root, "template", release, filepath.Join(root, "charts", "itmanager"),
		"--namespace", ns, "--kube-version", "1.36.3", "-f", allOptions)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := decodeAll(t, out)

	t.Run("every option reaches its object", func(t *testing.T) {
		for _, name := range []string{"itm-itmanager", "itm-itmanager-checkin"} {
			d := typed[appsv1.Deployment](t, named(t, objs, "Deployment", name))
			c := d.Spec.Template.Spec.Containers[0]
			if want := "registry.example.com/itmanager@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; c.Image != want || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("%s runs %s (%s), want %s (Always): the digest wins over the tag", name, c.Image, c.ImagePullPolicy, want)
			}
			tsc := d.Spec.Template.Spec.TopologySpreadConstraints
			if len(tsc) == 0 || tsc[0].LabelSelector == nil || !equality.Semantic.DeepEqual(tsc[0].LabelSelector.MatchLabels, d.Spec.Selector.MatchLabels) ||
				!slices.Equal(tsc[0].MatchLabelKeys, []string{"pod-template-hash"}) {
				t.Errorf("%s: a spread constraint without labelSelector should count the Deployment's own pods of its current ReplicaSet: %+v", name, tsc)
			}
		}
		manager := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itm-itmanager"))
		if tsc := manager.Spec.Template.Spec.TopologySpreadConstraints; len(tsc) != 2 || tsc[1].MatchLabelKeys != nil ||
			tsc[1].LabelSelector.MatchLabels["app.kubernetes.io/name"] != "itmanager" || len(tsc[1].LabelSelector.MatchLabels) != 1 {
			t.Errorf("manager: a spread constraint with its own labelSelector should be kept as given: %+v", tsc)
		}
		if sc := manager.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 10001 || sc.FSGroup == nil {
			t.Errorf("manager podSecurityContext not taken from values: %+v", sc)
		}

		svc := typed[corev1.Service](t, named(t, objs, "Service", "fleet-checkin"))
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ClusterIP != "10.0.0.44" || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
			!slices.Equal(svc.Spec.LoadBalancerSourceRanges, []string{"198.51.100.0/24", "203.0.113.0/24"}) ||
			svc.Spec.Ports[0].NodePort != 30443 || svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-type"] != "external" {
			t.Errorf("check-in Service does not carry the values: %+v %v", svc.Spec, svc.Annotations)
		}

		pdb := typed[policyv1.PodDisruptionBudget](t, named(t, objs, "PodDisruptionBudget", "itm-itmanager"))
		if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(2) || pdb.Spec.MaxUnavailable != nil ||
			!equality.Semantic.DeepEqual(pdb.Spec.Selector.MatchLabels, manager.Spec.Selector.MatchLabels) {
			t.Errorf("manager PodDisruptionBudget: %+v", pdb.Spec)
		}
		checkinPDB := typed[policyv1.PodDisruptionBudget](t, named(t, objs, "PodDisruptionBudget", "itm-itmanager-checkin"))
		if checkinPDB.Spec.MaxUnavailable == nil || *checkinPDB.Spec.MaxUnavailable != intstr.FromString("50%") {
			t.Errorf("check-in PodDisruptionBudget: %+v", checkinPDB.Spec)
		}

		cert := named(t, objs, "Certificate", "itm-itmanager-checkin")
		spec, _, _ := unstructured.NestedMap(cert.Object, "spec")
		dns, _, _ := unstructured.NestedStringSlice(spec, "dnsNames")
		ips, _, _ := unstructured.NestedStringSlice(spec, "ipAddresses")
		issuer, _, _ := unstructured.NestedString(spec, "issuerRef", "name")
		if spec["secretName"] != "fleet-checkin-tls" || !slices.Equal(dns, []string{"checkin.example.com"}) ||
			!slices.Equal(ips, []string{"192.0.2.10", "2001:db8::10"}) || issuer != "fleet-ca" {
			t.Errorf("check-in Certificate: %v", spec)
		}
		checkin := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itm-itmanager-checkin"))
		if v := checkin.Spec.Template.Spec.Volumes; len(v) != 1 || v[0].Secret == nil || v[0].Secret.SecretName != "fleet-checkin-tls" {
			t.Errorf("check-in pods do not mount the Secret cert-manager writes: %+v", v)
		}
		if !slices.Contains(manager.Spec.Template.Spec.Containers[0].Args, "--checkin-cert-secret=fleet-checkin-tls") {
			t.Errorf("the manager is not told to read the cert-manager Secret (else it would issue its own): %v", manager.Spec.Template.Spec.Containers[0].Args)
		}

		for _, crd := range ofKind(objs, "CustomResourceDefinition") {
			a := crd.GetAnnotations()
			if _, kept := a["helm.sh/resource-policy"]; kept || a["argocd.argoproj.io/sync-options"] != "Delete=false" {
				t.Errorf("CRD %s annotations %v: want crds.annotations and no keep policy (crds.keep=false)", crd.GetName(), a)
			}
		}
	})

	c, ctx := apiServer(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	created := 0
	for _, obj := range objs {
		if g := obj.GroupVersionKind().Group; g == "cert-manager.io" || g == "monitoring.coreos.com" {
			continue // cert-manager's and the Prometheus Operator's CRDs are not served here; chart_metrics_test checks those
		}
		if obj.GetKind() == "ConfigMap" && obj.GetNamespace() == "monitoring" {
			continue // the dashboard goes where Grafana's sidecar looks, a namespace not made here
		}
		if err := install(ctx, c, obj); err != nil {
			t.Errorf("create %s %s/%s: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
		created++
	}
	if created < 30 {
		t.Errorf("created only %d objects", created)
	}
}

// TestHelmInstallDryRunAgainstARealAPIServer runs helm's own install path
// (kubeVersion against the server's version, each object validated
// against the server's OpenAPI schema, NOTES.txt rendered) without
// creating anything, and checks NOTES tells how to verify the install.
func TestHelmInstallDryRunAgainstARealAPIServer(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig := writeKubeconfig(t, env.Config)
	// The test API server serves itmanager's CRDs already, not owned by a
	// release: helm would refuse to adopt them.
	out, err := runHelm(t, root, "install", "itmanager", filepath.Join(root, "charts", "itmanager"), "--kubeconfig", kubeconfig,
		"--namespace", namespace, "--create-namespace", "--dry-run=server", "--set", "crds.install=false")
	if err != nil {
		t.Fatalf("helm install --dry-run=server: %v", err)
	}
	notes := string(out)
	if i := strings.Index(notes, "\nNOTES:\n"); i >= 0 {
		notes = notes[i:]
	} else {
		t.Fatalf("no NOTES in helm install's output:\n%s", out)
	}
	for _, want := range []string{
		"kubectl -n itmanager-system wait deployment/itmanager --for=condition=Available",
		"kubectl -n itmanager-system wait deployment/itmanager-checkin --for=condition=Available",
		"validatingadmissionpolicies,mutatingadmissionpolicies",
		"https://itmanager-checkin.itmanager-system.svc",
		"pod-security.kubernetes.io/enforce=restricted",
		"docs/install.md",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
}

// TestChartPodsStayThroughTheirNodesDrain: the manager's and the check-in
// service's Pods carry itmanager.io/drain=skip, so a maintenance window
// that drains their node (on a one-node cluster, the node that holds both
// replicas) leaves them running to finish the upgrade and uncordon it: the
// drain's own filter chain skips a Pod made from each template.
func TestChartPodsStayThroughTheirNodesDrain(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	filters := nodeupgrade.Filters(nodeupgrade.DrainOptions{IgnoreDaemonSets: true, UpgradesNamespace: "itmanager-upgrades", DeviceLabel: "itmanager.io/device"})
	found := 0
	for _, obj := range mustRender(t, root) {
		if obj.GetKind() != "Deployment" {
			continue
		}
		found++
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
		pod.Namespace = namespace
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: d.Name + "-1", UID: "u", Controller: ptr.To(true)}}
		if v := nodeupgrade.Classify(pod, filters); v.Class != nodeupgrade.Skip || v.Rule != nodeupgrade.RuleSkipLabel {
			t.Errorf("Deployment %s: a drain classes its Pod %+v, want skipped by its label", d.Name, v)
		}
	}
	if found != 2 {
		t.Errorf("found %d Deployments, want the manager's and the check-in service's", found)
	}
}

// A stopping Pod keeps serving for preStopSleepSeconds before SIGTERM, so
// the webhook client and Services stop sending to it first (a helm upgrade
// without it refused 1 webhook call in 241); 0 turns the hook off, and the
// sleep stays below each Deployment's grace period.
func TestChartPodsKeepServingBrieflyWhenStopped(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sleeps := func(args ...string) map[string]int64 {
		t.Helper()
		got := map[string]int64{}
		for _, obj := range ofKind(mustRender(t, root, args...), "Deployment") {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
				t.Fatal(err)
			}
			c := d.Spec.Template.Spec.Containers[0]
			got[c.Name] = -1
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
				got[c.Name] = c.Lifecycle.PreStop.Sleep.Seconds
				if grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds; grace == nil || *grace <= got[c.Name] {
					t.Errorf("Deployment %s: preStop sleep %ds is not below its grace period %v", d.Name, got[c.Name], grace)
				}
			}
		}
		return got
	}
	if got, want := sleeps(), map[string]int64{"manager": 5, "checkin": 5}; !maps.Equal(got, want) {
		t.Errorf("defaults: preStop sleep per container %v, want %v", got, want)
	}
	if got, want := sleeps("--set", "preStopSleepSeconds=0", "--set", "checkin.preStopSleepSeconds=7"), map[string]int64{"manager": -1, "checkin": 7}; !maps.Equal(got, want) {
		t.Errorf("manager off, check-in 7: preStop sleep per container %v, want %v (-1: no hook)", got, want)
	}
	if _, err := render(t, root, "--set", "preStopSleepSeconds=40"); err == nil {
		t.Error("a preStop sleep of 40 s (beyond the manager's 30 s grace period) was accepted")
	}
}
