package deploy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

func TestChartMetricsServicesSelectTheirOwnPodsAndNothingOptionalRendersByDefault(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs := mustRender(t, root)
	svc := typed[corev1.Service](t, named(t, objs, "Service", "itmanager-metrics"))
	manager := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itmanager"))
	checkinDep := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itmanager-checkin"))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "https" || svc.Spec.Ports[0].Port != 8443 || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Errorf("manager metrics Service ports: %+v", svc.Spec.Ports)
	}
	selects := func(sel map[string]string, pod map[string]string) bool {
		for k, v := range sel {
			if pod[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !selects(svc.Spec.Selector, manager.Spec.Template.Labels) || selects(svc.Spec.Selector, checkinDep.Spec.Template.Labels) {
		t.Errorf("manager metrics Service selector %v must select the manager's pods only", svc.Spec.Selector)
	}
	csvc := typed[corev1.Service](t, named(t, objs, "Service", "itmanager-checkin-metrics"))
	if csvc.Spec.Ports[0].Port != 8080 || csvc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Errorf("check-in metrics Service ports: %+v", csvc.Spec.Ports)
	}
	if !selects(csvc.Spec.Selector, checkinDep.Spec.Template.Labels) || selects(csvc.Spec.Selector, manager.Spec.Template.Labels) {
		t.Errorf("check-in metrics Service selector %v must select the check-in pods only", csvc.Spec.Selector)
	}
	for _, port := range manager.Spec.Template.Spec.Containers[0].Ports {
		if port.Name == "metrics" && port.ContainerPort != 8443 {
			t.Errorf("manager metrics port %d", port.ContainerPort)
		}
	}
	// Off by default: nobody is bound, no Prometheus Operator kinds, no
	// dashboard, and the default self-signed serving certificate.
	for _, obj := range objs {
		switch {
		case obj.GetKind() == "ClusterRoleBinding" && obj.GetName() == "itmanager-metrics-reader",
			obj.GroupVersionKind().Group == "monitoring.coreos.com",
			obj.GetKind() == "ConfigMap" && obj.GetLabels()["grafana_dashboard"] != "":
			t.Errorf("rendered by default: %s %s", obj.GetKind(), obj.GetName())
		}
	}
	if args := manager.Spec.Template.Spec.Containers[0].Args; slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--metrics-cert-path") }) {
		t.Errorf("--metrics-cert-path without a certificate option: %v", args)
	}

	t.Run("no metrics Services with metrics off", func(t *testing.T) {
		for _, obj := range mustRender(t, root, "--set", "metrics.enabled=false", "--set", "checkin.metrics.enabled=false") {
			if obj.GetKind() == "Service" && strings.HasSuffix(obj.GetName(), "-metrics") {
				t.Errorf("rendered %s with metrics off", obj.GetName())
			}
		}
	})
}

func TestChartBindsTheMetricsReaderRoleToTheSubjectsGiven(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs := mustRender(t, root, "--set", "metrics.reader.subjects[0].kind=ServiceAccount", "--set", "metrics.reader.subjects[0].name=prometheus-k8s",
		"--set", "metrics.reader.subjects[0].namespace=monitoring", "--set", "metrics.reader.subjects[1].kind=User", "--set", "metrics.reader.subjects[1].name=scraper")
	crb := typed[rbacv1.ClusterRoleBinding](t, named(t, objs, "ClusterRoleBinding", "itmanager-metrics-reader"))
	want := []rbacv1.Subject{
		{Kind: "ServiceAccount", Name: "prometheus-k8s", Namespace: "monitoring"},
		{Kind: "User", Name: "scraper", APIGroup: rbacv1.GroupName},
	}
	if !equality.Semantic.DeepEqual(crb.Subjects, want) {
		t.Errorf("subjects %+v, want %+v", crb.Subjects, want)
	}
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != "itmanager-metrics-reader" {
		t.Errorf("roleRef %+v", crb.RoleRef)
	}
	role := typed[rbacv1.ClusterRole](t, named(t, objs, "ClusterRole", "itmanager-metrics-reader"))
	if want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}; !equality.Semantic.DeepEqual(role.Rules, want) {
		t.Errorf("metrics-reader rules %+v", role.Rules)
	}
	if _, err := render(t, root, "--set", "metrics.reader.subjects[0].kind=ServiceAccount", "--set", "metrics.reader.subjects[0].name=p"); err == nil ||
		!strings.Contains(err.Error(), "namespace") {
		t.Errorf("a ServiceAccount subject without namespace: got %v, want an error naming namespace", err)
	}
}

// endpoint is the first endpoint of the ServiceMonitor name.
func endpoint(t *testing.T, objs []*unstructured.Unstructured, name string) map[string]any {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(named(t, objs, "ServiceMonitor", name).Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor %s has %d endpoints", name, len(eps))
	}
	return eps[0].(map[string]any)
}

func TestChartServiceMonitorScrapesWithTheTokenAndVerifiesTheCertificateItIsGiven(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("self-signed default: token, no verification possible", func(t *testing.T) {
		objs := mustRender(t, root, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom")
		ep := endpoint(t, objs, "itmanager")
		if ep["port"] != "https" || ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep["interval"] != "30s" {
			t.Errorf("manager endpoint %v", ep)
		}
		if tls, _ := ep["tlsConfig"].(map[string]any); tls["insecureSkipVerify"] != true {
			t.Errorf("tlsConfig %v", ep["tlsConfig"])
		}
		sm := named(t, objs, "ServiceMonitor", "itmanager")
		if sm.GetLabels()["release"] != "prom" {
			t.Errorf("labels %v", sm.GetLabels())
		}
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		svc := named(t, objs, "Service", "itmanager-metrics")
		for k, v := range sel {
			if svc.GetLabels()[k] != v {
				t.Errorf("ServiceMonitor selector %v does not select Service labels %v", sel, svc.GetLabels())
			}
		}
		if sel2, _, _ := unstructured.NestedStringMap(named(t, objs, "ServiceMonitor", "itmanager-checkin").Object, "spec", "selector", "matchLabels"); sel2["app.kubernetes.io/component"] != "checkin-metrics" {
			t.Errorf("check-in ServiceMonitor selector %v", sel2)
		}
		if cep := endpoint(t, objs, "itmanager-checkin"); cep["port"] != "http-metrics" || cep["scheme"] != "http" || cep["bearerTokenFile"] != nil {
			t.Errorf("check-in endpoint %v", cep)
		}
	})
	t.Run("cert-manager: the Certificate is mounted, served and verified", func(t *testing.T) {
		objs := mustRender(t, root, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.certManager.enabled=true",
			"--set", "metrics.certManager.issuerRef.name=ca", "--set", "metrics.certManager.issuerRef.kind=ClusterIssuer")
		cert := named(t, objs, "Certificate", "itmanager-metrics")
		dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
		if !slices.Contains(dns, "itmanager-metrics."+namespace+".svc") || secret != "itmanager-metrics-cert" {
			t.Errorf("Certificate dnsNames %v secretName %s", dns, secret)
		}
		manager := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itmanager"))
		c := manager.Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "--metrics-cert-path=/tmp/k8s-metrics-server/metrics-certs") {
			t.Errorf("args %v", c.Args)
		}
		mounted := false
		for _, v := range manager.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == secret {
				for _, m := range c.VolumeMounts {
					mounted = mounted || (m.Name == v.Name && m.MountPath == "/tmp/k8s-metrics-server/metrics-certs" && m.ReadOnly)
				}
			}
		}
		if !mounted {
			t.Errorf("the manager does not mount Secret %s at its --metrics-cert-path", secret)
		}
		tls, _ := endpoint(t, objs, "itmanager")["tlsConfig"].(map[string]any)
		ca, _, _ := unstructured.NestedStringMap(tls, "ca", "secret")
		if tls["insecureSkipVerify"] != nil || tls["serverName"] != "itmanager-metrics."+namespace+".svc" || ca["name"] != secret || ca["key"] != "ca.crt" {
			t.Errorf("tlsConfig %v", tls)
		}
	})
	t.Run("certSecret: mounted without a Certificate", func(t *testing.T) {
		objs := mustRender(t, root, "--set", "metrics.certSecret=my-metrics-tls")
		for _, obj := range objs {
			if obj.GetKind() == "Certificate" && obj.GetName() == "itmanager-metrics" {
				t.Error("a Certificate without metrics.certManager.enabled")
			}
		}
		manager := typed[appsv1.Deployment](t, named(t, objs, "Deployment", "itmanager"))
		if !slices.ContainsFunc(manager.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "my-metrics-tls" }) {
			t.Errorf("Secret my-metrics-tls not mounted: %+v", manager.Spec.Template.Spec.Volumes)
		}
	})
	t.Run("cert-manager without an issuer is refused", func(t *testing.T) {
		if _, err := render(t, root, "--set", "metrics.certManager.enabled=true"); err == nil || !strings.Contains(err.Error(), "certManager/issuerRef") {
			t.Errorf("got %v", err)
		}
	})
}

// The PrometheusRule is files/prometheus-rules.yaml, the file promtool
// tests (hack/tools/prometheus), and the dashboard ConfigMap is
// files/dashboard.json, the file whose queries are checked.
func TestChartShipsTheTestedRulesAndDashboardVerbatim(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs := mustRender(t, root, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=prom",
		"--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring")
	var want map[string]any
	if err := sigsyaml.Unmarshal(mustRead(t, filepath.Join(root, "charts", "itmanager", "files", "prometheus-rules.yaml")), &want); err != nil {
		t.Fatal(err)
	}
	rule := named(t, objs, "PrometheusRule", "itmanager")
	if !equality.Semantic.DeepEqual(rule.Object["spec"], want) {
		t.Errorf("PrometheusRule spec differs from files/prometheus-rules.yaml")
	}
	if rule.GetLabels()["release"] != "prom" {
		t.Errorf("labels %v", rule.GetLabels())
	}
	cm := typed[corev1.ConfigMap](t, named(t, objs, "ConfigMap", "itmanager-dashboard"))
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
		t.Errorf("dashboard ConfigMap %s/%s labels %v", cm.Namespace, cm.Name, cm.Labels)
	}
	file := strings.TrimRight(string(mustRead(t, filepath.Join(root, "charts", "itmanager", "files", "dashboard.json"))), "\n")
	if cm.Data["itmanager.json"] != file {
		t.Errorf("the dashboard ConfigMap differs from files/dashboard.json")
	}
}
