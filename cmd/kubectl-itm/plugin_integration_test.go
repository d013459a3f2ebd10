//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// pluginVersion is stamped into the plugin built for these tests, so the
// install command enroll prints can be checked for the release URL.
const pluginVersion = "v9.8.7"

// kubectlRun runs the real kubectl with only the plugin's directory, the
// control plane's (kubectl itself) and the system's on the PATH, so
// kubectl finds the plugin built here by its own discovery.
type kubectlRun struct {
	kubectl, path, home string
}

func (k kubectlRun) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(k.kubectl, args...)
	cmd.Env = []string{"PATH=" + k.path, "HOME=" + k.home}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// TestPluginThroughKubectl runs the built plugin as kubectl runs it
// (plugin discovery on the PATH) against the envtest API server: every
// read command with --kubeconfig, --context and -o json; impersonation;
// --help without an API call; completion of object names; and enroll
// gated by the API server's RBAC on the enrolment Secret.
func TestPluginThroughKubectl(t *testing.T) {
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	bin, err := testenv.BinaryDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(bin, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl is not in %s (make control-plane builds it): %v", bin, err)
	}

	dir := t.TempDir()
	build := exec.Command("go", "build", "-ldflags", "-X github.com/itmanager-io/itmanager/internal/version.Version="+pluginVersion,
		"-o", filepath.Join(dir, "kubectl-itm"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the plugin: %v\n%s", err, out)
	}
	helper, err := os.ReadFile("kubectl_complete-itm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-itm"), helper, 0o755); err != nil {
		t.Fatal(err)
	}
	k := kubectlRun{kubectl: kubectl, path: dir + ":" + bin + ":/usr/bin:/bin", home: t.TempDir()}

	// A decoy API server that counts what reaches it: the kubeconfig's
	// current context points at it, so only --context envtest reaches
	// the real one, and a --help that called the API would show here.
	var decoyRequests atomic.Int64
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		decoyRequests.Add(1)
		http.Error(w, "decoy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(decoy.Close)
	kc := writeKubeconfig(t, env, decoy.URL)

	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	seed(t, ctx, c)

	itm := func(args ...string) []string {
		return append([]string{"itm", "--kubeconfig", kc, "--context", "envtest"}, args...)
	}
	decode := func(t *testing.T, out string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		return m
	}

	t.Run("every read command with --kubeconfig --context -o json", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			key  string
			want any
		}{
			{[]string{"why", "lt-1", "wiki"}, "device", "lt-1"},
			{[]string{"windows"}, "windows", nil},
			{[]string{"schedule", "ring1", "--count", "3"}, "window", "ring1"},
			{[]string{"status", "ada"}, "user", "ada"},
			{[]string{"enroll", "lt-1"}, "device", "lt-1"},
		} {
			out, errOut, err := k.run(t, itm(append(tt.args, "-o", "json")...)...)
			if err != nil {
				t.Errorf("%v: %v\n%s", tt.args, err, errOut)
				continue
			}
			m := decode(t, out)
			if tt.want != nil && m[tt.key] != tt.want {
				t.Errorf("%v: %s = %v", tt.args, tt.key, m[tt.key])
			}
			if tt.key == "windows" {
				if l, _ := m["windows"].([]any); len(l) != 1 || l[0].(map[string]any)["name"] != "ring1" {
					t.Errorf("windows: %v", m)
				}
			}
		}
		if decoyRequests.Load() != 0 {
			t.Errorf("--context envtest still sent %d requests to the current context's server", decoyRequests.Load())
		}
		// Positive control: without --context the current (decoy) context
		// is the one used.
		if _, _, err := k.run(t, "itm", "--kubeconfig", kc, "windows", "-o", "json"); err == nil || decoyRequests.Load() == 0 {
			t.Errorf("without --context: %v, %d decoy requests", err, decoyRequests.Load())
		}
	})

	t.Run("--help does no API call", func(t *testing.T) {
		before := decoyRequests.Load()
		for _, cmd := range []string{"why", "windows", "schedule", "approve", "deny", "status", "enroll", "version", "completion"} {
			out, errOut, err := k.run(t, "itm", "--kubeconfig", kc, cmd, "--help")
			if err != nil || !strings.Contains(out, "Usage:") {
				t.Errorf("%s --help: %v\n%s%s", cmd, err, out, errOut)
			}
		}
		if n := decoyRequests.Load() - before; n != 0 {
			t.Errorf("--help sent %d requests", n)
		}
	})

	t.Run("--as and --as-group impersonate", func(t *testing.T) {
		_, errOut, err := k.run(t, itm("--as", "carol", "windows", "-o", "json")...)
		if err == nil || !strings.Contains(errOut, `User "carol" cannot list resource "maintenancewindows"`) {
			t.Errorf("--as carol: %v\n%s", err, errOut)
		}
		out, errOut, err := k.run(t, itm("--as", "carol", "--as-group", "itm-readers", "windows", "-o", "json")...)
		if err != nil || len(decode(t, out)["windows"].([]any)) != 1 {
			t.Errorf("--as carol --as-group itm-readers: %v\n%s", err, errOut)
		}
	})

	t.Run("completion lists devices", func(t *testing.T) {
		out, errOut, err := k.run(t, itm("__complete", "why", "")...)
		if err != nil || !strings.HasPrefix(out, "lt-1\nlt-2\n:4\n") {
			t.Errorf("kubectl itm __complete why \"\": %v %q\n%s", err, out, errOut)
		}
		// kubectl's own completion of a plugin, through kubectl_complete-itm.
		out, errOut, err = k.run(t, "__complete", "itm", "--kubeconfig", kc, "--context", "envtest", "why", "lt-1", "")
		if err != nil || !strings.HasPrefix(out, "wiki\n") {
			t.Errorf("kubectl __complete itm why lt-1 \"\": %v %q\n%s", err, out, errOut)
		}
	})

	t.Run("enroll reads the Secret with the user's own RBAC", func(t *testing.T) {
		// alice may read Devices but not the Secret: refused, clearly.
		out, errOut, err := k.run(t, itm("--as", "alice", "--as-group", "itm-readers", "enroll", "lt-1", "-o", "json")...)
		if err == nil || !strings.Contains(errOut, "you may not read the enrolment Secret itmanager-devices/lt-1-agent") ||
			!strings.Contains(errOut, `get on secrets "lt-1-agent" in namespace itmanager-devices`) || strings.Contains(out+errOut, seededToken) {
			t.Errorf("alice: %v\n%s%s", err, out, errOut)
		}
		// bob has get on exactly that Secret: the bundle and the summary.
		out, errOut, err = k.run(t, itm("--as", "bob", "--as-group", "itm-readers", "enroll", "lt-1", "-o", "json")...)
		if err != nil || decode(t, out)["token"] != seededToken {
			t.Errorf("bob -o json: %v\n%s", err, errOut)
		}
		file := filepath.Join(t.TempDir(), "lt-1.tar.gz")
		out, errOut, err = k.run(t, itm("--as", "bob", "--as-group", "itm-readers", "enroll", "lt-1", "--bundle", file)...)
		want := "curl -fsSLO --proto '=https' https://github.com/itmanager-io/itmanager/releases/download/" + pluginVersion + "/install-agent.sh && sudo sh install-agent.sh --version " + pluginVersion + " --bundle " + filepath.Base(file)
		if err != nil || !strings.Contains(out, want) || strings.Contains(out+errOut, seededToken) {
			t.Errorf("bob --bundle: %v\n%s%s", err, out, errOut)
		}
		if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("bundle file: %v", err)
		}
	})

	t.Run("version", func(t *testing.T) {
		out, _, err := k.run(t, "itm", "version")
		if err != nil || !strings.HasPrefix(out, "kubectl-itm "+pluginVersion+" ") {
			t.Errorf("version: %v %q", err, out)
		}
	})
}

const seededToken = "itm_integration-token"

// seed creates the objects every subtest reads and the RBAC of the
// impersonated users: group itm-readers reads itmanager's kinds; bob
// alone may get the Secret lt-1-agent.
func seed(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	must := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
	must(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "itmanager-devices"}})
	lt1 := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1"},
		Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: "ada", Addresses: []string{"10.0.0.7"}, Agent: &itmv1.AgentSpec{Enabled: true}}}
	must(lt1)
	must(&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-2"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop}})
	must(&itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki"}, Spec: itmv1.AccessPolicySpec{Subjects: itmv1.Subjects{Groups: []string{"eng"}},
		Destinations: []itmv1.Destination{{Namespaces: []string{"wiki"}}}}})
	must(&itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "ring1"}, Spec: itmv1.MaintenanceWindowSpec{
		TimeZone: "Europe/Berlin", Windows: []itmv1.Window{{Schedule: "30 2 * * SUN", Duration: metav1.Duration{Duration: 2 * time.Hour}}}}})
	must(&itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "ada"},
		Spec: itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: "Ada Lovelace", Email: "ada@example.com"}, Groups: []string{"eng"}}})
	must(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: "lt-1-agent",
			Labels:          map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: itmv1.GroupVersion.String(), Kind: "Device", Name: "lt-1", UID: lt1.UID, Controller: ptr.To(true)}}},
		Data: map[string][]byte{"url": []byte("https://checkin.example.com/v1/devices/lt-1"), "token": []byte(seededToken), "ca.crt": nil},
	})
	must(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "itm-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"itmanager.io"}, Resources: []string{"*"}, Verbs: []string{"get", "list"}}}})
	must(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "itm-readers"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "itm-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "itm-readers"}}})
	must(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: "enrol-lt-1"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"lt-1-agent"}, Verbs: []string{"get"}}}})
	must(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: "enrol-lt-1"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "enrol-lt-1"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"}}})
}

// writeKubeconfig writes a kubeconfig with two contexts: "decoy", the
// current one, at decoyURL, and "envtest", the real API server as its
// admin.
func writeKubeconfig(t *testing.T, env *testenv.Environment, decoyURL string) string {
	t.Helper()
	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.Clusters["decoy"] = &clientcmdapi.Cluster{Server: decoyURL}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.AuthInfos["nobody"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.Contexts["decoy"] = &clientcmdapi.Context{Cluster: "decoy", AuthInfo: "nobody"}
	kc.CurrentContext = "decoy"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
