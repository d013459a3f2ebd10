package deploy

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/itmanager-io/itmanager/internal/testenv"
)

// TestCheckinServiceIsDeployedApartFromTheManager checks, in the chart and
// in config/default alike, that the check-in service is its own Deployment
// of two or more replicas under its own ServiceAccount, bound to exactly
// the rules of config/rbac/checkin_role.yaml, that its Service selects only
// its pods, and that the manager no longer serves check-ins.
func TestCheckinServiceIsDeployedApartFromTheManager(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]rbacv1.PolicyRule{}
	for _, obj := range decodeAll(t, mustRead(t, filepath.Join(root, "config", "rbac", "checkin_role.yaml"))) {
		want[obj.GetKind()] = rulesOf(t, obj.Object)
	}
	if len(want) != 2 {
		t.Fatalf("config/rbac/checkin_role.yaml: want a ClusterRole and a Role, got %v", want)
	}

	helmOut, err := exec.Command(helmBinary(t, root), "template", "itmanager", filepath.Join(root, "charts", "itmanager"),
		"--namespace", namespace, "--kube-version", "1.36.3").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	kustOut, err := exec.Command(kustomizeBinary(t, root), "build", filepath.Join(root, "config", "default")).Output()
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	for name, tc := range map[string]struct {
		out                             []byte
		deployment, serviceAccount, svc string
	}{
		"chart":          {out: helmOut, deployment: "itmanager-checkin", serviceAccount: "itmanager-checkin", svc: "itmanager-checkin"},
		"config/default": {out: kustOut, deployment: "itmanager-checkin", serviceAccount: testenv.CheckinServiceAccount, svc: "itmanager-checkin"},
	} {
		t.Run(name, func(t *testing.T) {
			objs := decodeAll(t, tc.out)
			var deployments []appsv1.Deployment
			var services []corev1.Service
			gotRules := map[string][]rbacv1.PolicyRule{}
			bound := map[string]string{} // role kind/name -> namespace of the binding
			for _, obj := range objs {
				switch obj.GetKind() {
				case "Deployment":
					deployments = append(deployments, typed[appsv1.Deployment](t, obj))
				case "Service":
					services = append(services, typed[corev1.Service](t, obj))
				}
			}
			for _, obj := range objs {
				switch obj.GetKind() {
				case "ClusterRoleBinding", "RoleBinding":
					b := typed[rbacv1.RoleBinding](t, obj)
					for _, s := range b.Subjects {
						if s.Kind == rbacv1.ServiceAccountKind && s.Name == tc.serviceAccount {
							bound[b.RoleRef.Kind+"/"+b.RoleRef.Name] = obj.GetNamespace()
						}
					}
				}
			}
			for _, obj := range objs {
				if obj.GetKind() != "ClusterRole" && obj.GetKind() != "Role" {
					continue
				}
				if ns, ok := bound[obj.GetKind()+"/"+obj.GetName()]; ok {
					if obj.GetKind() == "Role" && (obj.GetNamespace() != testenv.DevicesNamespace || ns != testenv.DevicesNamespace) {
						t.Errorf("the check-in service's Role %s is in %q (bound in %q), not the devices namespace", obj.GetName(), obj.GetNamespace(), ns)
					}
					gotRules[obj.GetKind()] = append(gotRules[obj.GetKind()], rulesOf(t, obj.Object)...)
				}
			}
			if !equality.Semantic.DeepEqual(gotRules, want) {
				t.Errorf("the check-in ServiceAccount is bound to\n%+v\nwant exactly config/rbac/checkin_role.yaml's\n%+v", gotRules, want)
			}

			var checkin, manager *appsv1.Deployment
			for i := range deployments {
				switch deployments[i].Name {
				case tc.deployment:
					checkin = &deployments[i]
				default:
					manager = &deployments[i]
				}
			}
			if checkin == nil || manager == nil {
				t.Fatalf("want the manager's and the check-in service's Deployments, got %d", len(deployments))
			}
			if checkin.Spec.Replicas == nil || *checkin.Spec.Replicas < 2 {
				t.Errorf("check-in replicas %v, want at least 2", checkin.Spec.Replicas)
			}
			pod := checkin.Spec.Template.Spec
			if pod.ServiceAccountName != tc.serviceAccount {
				t.Errorf("check-in pods run as %q, want %q", pod.ServiceAccountName, tc.serviceAccount)
			}
			c := pod.Containers[0]
			if !slices.Equal(c.Command, []string{"/itmanager-checkin"}) || c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("check-in container: command %v, probes %v/%v", c.Command, c.ReadinessProbe, c.LivenessProbe)
			}
			if len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "itmanager-checkin-tls" {
				t.Errorf("check-in pods mount %+v, want the Secret itmanager-checkin-tls", pod.Volumes)
			}
			for _, arg := range manager.Spec.Template.Spec.Containers[0].Args {
				if strings.HasPrefix(arg, "--checkin-bind-address") {
					t.Errorf("the manager still serves check-ins: %s", arg)
				}
			}
			for _, p := range manager.Spec.Template.Spec.Containers[0].Ports {
				if p.Name == "checkin" {
					t.Errorf("the manager still exposes a check-in port")
				}
			}
			if labels.SelectorFromSet(manager.Spec.Selector.MatchLabels).Matches(labels.Set(checkin.Spec.Template.Labels)) {
				t.Errorf("the manager's Deployment selects check-in pods")
			}

			var svc *corev1.Service
			for i := range services {
				if services[i].Name == tc.svc {
					svc = &services[i]
				}
			}
			if svc == nil {
				t.Fatalf("no Service %s", tc.svc)
			}
			sel := labels.SelectorFromSet(svc.Spec.Selector)
			if len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(checkin.Spec.Template.Labels)) || sel.Matches(labels.Set(manager.Spec.Template.Labels)) {
				t.Errorf("Service %s selects %v: it must select the check-in pods %v and not the manager's %v",
					svc.Name, svc.Spec.Selector, checkin.Spec.Template.Labels, manager.Spec.Template.Labels)
			}
			for _, other := range services {
				if other.Name != tc.svc && len(other.Spec.Selector) > 0 && labels.SelectorFromSet(other.Spec.Selector).Matches(labels.Set(checkin.Spec.Template.Labels)) {
					// Only the metrics Service may, and only its metrics port.
					for _, p := range other.Spec.Ports {
						if p.TargetPort.StrVal != "metrics" {
							t.Errorf("Service %s selects the check-in pods and exposes their port %s", other.Name, p.TargetPort.String())
						}
					}
				}
			}
		})
	}
}

func typed[T any](t *testing.T, obj *unstructured.Unstructured) T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
