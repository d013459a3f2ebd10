package main

import (
	"context"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/yaml"

	"github.com/itmanager-io/itmanager/internal/options"
)

// flagsFor are validated options from args (and no environment), with the
// probe, metrics and pprof servers off: nothing here listens.
func flagsFor(t *testing.T, args ...string) *options.Manager {
	t.Helper()
	o := options.NewManager(func(string) string { return "" })
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse(append([]string{"--health-probe-bind-address=0", "--metrics-bind-address=0"}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	return o
}

// offlineManager is the manager main builds, against an API server that
// does not exist (it is never started), with a REST mapper from the scheme
// and the CRDs in place of discovery.
func offlineManager(t *testing.T, o *options.Manager) (ctrl.Manager, *rest.Config) {
	t.Helper()
	cluster := map[schema.GroupKind]bool{
		{Kind: "Node"}: true, {Kind: "Namespace"}: true, {Kind: "PersistentVolume"}: true,
		{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}: true, {Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}: true,
	}
	crds, err := filepath.Glob("config/crd/bases/*.yaml")
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, file := range crds {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, crd); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if crd.Spec.Scope == apiextensionsv1.ClusterScoped {
			cluster[schema.GroupKind{Group: crd.Spec.Group, Kind: crd.Spec.Names.Kind}] = true
		}
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	for gvk := range scheme.AllKnownTypes() {
		scope := meta.RESTScopeNamespace
		if cluster[gvk.GroupKind()] {
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gvk, scope)
	}
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	opts := managerOptions(o)
	opts.MapperProvider = func(*rest.Config, *http.Client) (meta.RESTMapper, error) { return mapper, nil }
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		t.Fatalf("create the manager: %v", err)
	}
	return mgr, cfg
}

// reconcilerTypes are the types in dir's package with a SetupWithManager
// method, as "package.Type".
func reconcilerTypes(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "SetupWithManager" {
				continue
			}
			recv := fn.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			if id, ok := recv.(*ast.Ident); ok {
				out = append(out, f.Name.Name+"."+id.Name)
			}
		}
	}
	return out
}

// wired are the types of what the components set up, as "package.Type".
func wired(list []component) []string {
	var out []string
	for _, c := range list {
		if c.of != nil {
			t := reflect.TypeOf(c.of)
			if t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			out = append(out, filepath.Base(t.PkgPath())+"."+t.Name())
		}
	}
	return out
}

// TestEveryReconcilerIsWired: every type in controllers and
// internal/webhook with a SetupWithManager method is in main's component
// list, and every component sets up on a manager without error (a kind
// missing from the scheme, a second controller of one name or a webhook
// path taken twice fails here).
func TestEveryReconcilerIsWired(t *testing.T) {
	o := flagsFor(t)
	mgr, cfg := offlineManager(t, o)
	list, err := components(context.Background(), mgr, o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := wired(list)
	want := append(reconcilerTypes(t, "controllers"), reconcilerTypes(t, "internal/webhook")...)
	if len(want) < 8 {
		t.Fatalf("found only %v with SetupWithManager; is the parse still right?", want)
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s has SetupWithManager but main.go does not wire it", w)
		}
	}
	for _, c := range list {
		if err := c.setup(mgr); err != nil {
			t.Errorf("set up %s: %v", c.name, err)
		}
	}
}

// TestReconcilersGetTheFlags: each reconciler is wired with every
// dependency (no nil client, reader, clock, recorder or callback) and with
// the namespaces and worker count of the flags, not a default of its own.
func TestReconcilersGetTheFlags(t *testing.T) {
	o := flagsFor(t, "--operator-namespace=ops", "--devices-namespace=devs", "--upgrades-namespace=ups", "--workers=3",
		"--checkin-url=https://checkin.example.com")
	mgr, cfg := offlineManager(t, o)
	list, err := components(context.Background(), mgr, o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"OperatorNamespace": "ops", "DevicesNamespace": "devs", "UpgradesNamespace": "ups", "Workers": 3,
		"URL": "https://checkin.example.com",
	}
	for _, c := range list {
		v := reflect.ValueOf(c.of)
		if !v.IsValid() || v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
			continue
		}
		v = v.Elem()
		for i := range v.NumField() {
			f, field := v.Type().Field(i), v.Field(i)
			if !f.IsExported() {
				continue
			}
			switch field.Kind() {
			case reflect.Interface, reflect.Func, reflect.Pointer:
				if field.IsNil() {
					t.Errorf("%s: %s is nil", c.name, f.Name)
				}
			}
			if w, ok := want[f.Name]; ok && !reflect.DeepEqual(field.Interface(), w) {
				t.Errorf("%s: %s is %v, want %v", c.name, f.Name, field.Interface(), w)
			}
		}
	}
}

// TestWiringFollowsTheFlags: the self-signed certificate rotator runs only
// without --checkin-cert-secret, the webhook only with --enable-webhooks,
// and the webhook certificate rotator only with --webhook-cert-secret
// (make dev gives none and serves its own certificate).
func TestWiringFollowsTheFlags(t *testing.T) {
	for _, c := range []struct {
		name                   string
		args                   []string
		rotator, hook, webhook bool
	}{
		{"the defaults", nil, true, true, false},
		{"a given serving certificate", []string{"--checkin-cert-secret=checkin-tls"}, false, true, false},
		{"no webhooks", []string{"--enable-webhooks=false"}, true, false, false},
		{"webhook certificate rotation", []string{"--webhook-cert-secret=webhook-tls"}, true, true, true},
		{"no webhooks, so no rotation", []string{"--enable-webhooks=false", "--webhook-cert-secret=webhook-tls"}, true, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := flagsFor(t, c.args...)
			mgr, cfg := offlineManager(t, o)
			list, err := components(context.Background(), mgr, o, cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := wired(list)
			if slices.Contains(got, "checkin.Rotator") != c.rotator {
				t.Errorf("rotator wired: %t, want %t", !c.rotator, c.rotator)
			}
			if slices.Contains(got, "webhook.MaintenanceWindowValidator") != c.hook {
				t.Errorf("webhook wired: %t, want %t", !c.hook, c.hook)
			}
			if slices.Contains(got, "webhookcert.Certs") != c.webhook {
				t.Errorf("webhook certificate rotator wired: %t, want %t", !c.webhook, c.webhook)
			}
			if c.webhook {
				// Not ready, and not serving, before the certificate is written.
				if err := mgr.GetWebhookServer().StartedChecker()(nil); err == nil {
					t.Error("the webhook server is ready before its certificate exists")
				}
			}
		})
	}
}
