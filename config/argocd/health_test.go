package argocd

import (
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// healthTests is Argo CD's health_test.yaml.
type healthTests struct {
	Tests []struct {
		HealthStatus Health `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

func loadTests(t *testing.T, kind string) healthTests {
	t.Helper()
	b, err := fs.ReadFile(Files(), Group+"/"+kind+"/health_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ht healthTests
	if err := yaml.UnmarshalStrict(b, &ht); err != nil {
		t.Fatalf("%s health_test.yaml: %v", kind, err)
	}
	return ht
}

func loadObject(t *testing.T, kind, input string) map[string]any {
	t.Helper()
	b, err := fs.ReadFile(Files(), Group+"/"+kind+"/"+input)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	if obj["kind"] != kind {
		t.Fatalf("%s: kind %v, want %s (fixtures are written by the controllers suite with ITM_UPDATE_ARGOCD_FIXTURES=1)", input, obj["kind"], kind)
	}
	return obj
}

// The committed fixtures are real objects the controllers suite drove into
// each state; each health.lua gives the health its health_test.yaml names.
func TestHealthOfEveryFixture(t *testing.T) {
	for _, kind := range Kinds {
		ht := loadTests(t, kind)
		if len(ht.Tests) == 0 {
			t.Fatalf("%s has no health tests", kind)
		}
		for _, tc := range ht.Tests {
			t.Run(kind+"/"+tc.InputPath, func(t *testing.T) {
				got, err := RunKind(kind, loadObject(t, kind, tc.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != tc.HealthStatus.Status || got.Message == "" {
					t.Fatalf("health %+v, want status %s with a message", got, tc.HealthStatus.Status)
				}
				if tc.HealthStatus.Message != "" && got.Message != tc.HealthStatus.Message {
					t.Fatalf("message %q, want %q", got.Message, tc.HealthStatus.Message)
				}
			})
		}
	}
}

// Every kind has Healthy, Progressing and Degraded fixtures (a window and a
// request Suspended too), and no fixture lies unlisted.
func TestEveryFixtureIsListedAndEveryHealthCovered(t *testing.T) {
	for _, kind := range Kinds {
		ht := loadTests(t, kind)
		var listed []string
		seen := map[string]bool{}
		for _, tc := range ht.Tests {
			listed = append(listed, path.Base(tc.InputPath))
			seen[tc.HealthStatus.Status] = true
		}
		entries, err := fs.ReadDir(Files(), Group+"/"+kind+"/testdata")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !slices.Contains(listed, e.Name()) {
				t.Errorf("%s: testdata/%s is not in health_test.yaml", kind, e.Name())
			}
		}
		want := []string{"Healthy", "Progressing", "Degraded"}
		switch kind {
		case "MaintenanceWindow":
			want = []string{"Healthy", "Progressing", "Suspended"}
		case "OnboardingRequest":
			want = append(want, "Suspended")
		}
		for _, w := range want {
			if !seen[w] {
				t.Errorf("%s: no fixture is %s", kind, w)
			}
		}
	}
}

// What Argo CD shows before itmanager has caught up: an object without
// status, or whose status.observedGeneration is behind its generation (a
// spec change not looked at yet), is Progressing, never Healthy, whatever
// its old conditions say; Stalled wins over Ready.
func TestHealthBeforeTheControllerCaughtUp(t *testing.T) {
	for _, kind := range Kinds {
		for _, tc := range loadTests(t, kind).Tests {
			if tc.HealthStatus.Status != "Healthy" && tc.HealthStatus.Status != "Suspended" {
				continue
			}
			t.Run(kind+"/"+tc.InputPath, func(t *testing.T) {
				healthy := loadObject(t, kind, tc.InputPath)
				noStatus := loadObject(t, kind, tc.InputPath)
				delete(noStatus, "status")
				stale := loadObject(t, kind, tc.InputPath)
				md := stale["metadata"].(map[string]any)
				md["generation"] = md["generation"].(float64) + 1
				emptyStatus := loadObject(t, kind, tc.InputPath)
				emptyStatus["status"] = map[string]any{}
				stalled := loadObject(t, kind, tc.InputPath)
				st := stalled["status"].(map[string]any)
				st["conditions"] = append(st["conditions"].([]any), map[string]any{"type": "Stalled", "status": "True", "reason": "Broken", "message": "x"})
				// A condition without a reason (written by hand, or by a
				// future writer) is still read, never a Lua error.
				noReason := loadObject(t, kind, tc.InputPath)
				nst := noReason["status"].(map[string]any)
				nst["conditions"] = append(nst["conditions"].([]any), map[string]any{"type": "Stalled", "status": "True", "message": "x"})
				for name, c := range map[string]struct {
					obj  map[string]any
					want string
				}{
					"as committed":         {healthy, tc.HealthStatus.Status},
					"no status":            {noStatus, "Progressing"},
					"empty status":         {emptyStatus, "Progressing"},
					"stale generation":     {stale, "Progressing"},
					"stalled though ready": {stalled, "Degraded"},
					"stalled, no reason":   {noReason, "Degraded"},
				} {
					got, err := RunKind(kind, c.obj)
					if err != nil {
						t.Fatal(err)
					}
					if got.Status != c.want {
						t.Errorf("%s: %+v, want %s", name, got, c.want)
					}
				}
			})
		}
	}
}

// Run is as strict as Argo CD: no string library for a script from
// argocd-cm, and a status Argo CD does not know reads Unknown.
func TestRunMirrorsArgoCD(t *testing.T) {
	if _, err := Run(`return {status = string.format("%s", "Healthy")}`, map[string]any{}); err == nil {
		t.Error("a script using the string library ran; Argo CD opens only package, base and table")
	}
	got, err := Run(`return {status = "Fine", message = "x"}`, map[string]any{})
	if err != nil || got.Status != "Unknown" {
		t.Errorf("invalid status: %+v, %v; want Unknown", got, err)
	}
	if _, err := Run(`return "Healthy"`, map[string]any{}); err == nil {
		t.Error("a script returning no table was accepted")
	}
	got, err = Run(`return {status = "Healthy", message = obj.metadata.name .. " " .. obj.metadata.generation}`,
		map[string]any{"metadata": map[string]any{"name": "a", "generation": int64(2)}})
	if err != nil || got.Message != "a 2" {
		t.Errorf("obj is not handed over as Argo CD does: %+v, %v", got, err)
	}
}

// docs/gitops.md shows the argocd-cm snippet exactly as the health.lua
// files are, so it cannot go stale.
func TestDocsShowTheArgoCDSnippet(t *testing.T) {
	want, err := ConfigMapSnippet()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../docs/gitops.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	const begin, end = "<!-- argocd-cm: begin (generated from config/argocd; TestDocsShowTheArgoCDSnippet) -->\n```yaml\n", "```\n<!-- argocd-cm: end -->"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/gitops.md lacks the markers %q ... %q", begin, end)
	}
	if got := doc[i+len(begin) : j]; got != want {
		t.Fatalf("docs/gitops.md's argocd-cm snippet is stale; it should read:\n%s", want)
	}
	for _, kind := range Kinds {
		if !strings.Contains(want, "resource.customizations.health.itmanager.io_"+kind+": |\n") {
			t.Errorf("snippet lacks %s", kind)
		}
	}
}
