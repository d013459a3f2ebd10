package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// plugin runs the root command with args against objs, returning
// stdout, stderr, how many clients were made and the error.
func plugin(t *testing.T, objs []client.Object, args ...string) (string, string, int, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	clients := 0
	o := &options{
		config:  genericclioptions.NewConfigFlags(true),
		streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
		now:     func() time.Time { return time.Date(2026, 3, 25, 12, 0, 0, 0, time.UTC) },
		local:   time.UTC,
		newClient: func() (client.Client, error) {
			clients++
			return fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(objs...).Build(), nil
		},
	}
	cmd := newRootCmdWith(o)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), clients, err
}

// TestHelpAndArgumentErrorsNeverReachTheCluster: --help on every command
// prints its usage and examples, and a wrong argument count is a usage
// error; neither makes a client, so a flag is never looked up as a name.
func TestHelpAndArgumentErrorsNeverReachTheCluster(t *testing.T) {
	for _, c := range []string{"why", "windows", "schedule", "approve", "deny", "status", "enroll", "version"} {
		for _, help := range []string{"--help", "-h"} {
			out, _, clients, err := plugin(t, nil, c, help)
			if err != nil || clients != 0 {
				t.Errorf("%s %s: err %v, %d clients", c, help, err, clients)
			}
			if !strings.Contains(out, "Usage:\n  kubectl itm "+c) || !strings.Contains(out, "Examples:\n") || !strings.Contains(out[strings.Index(out, "Examples:"):], "  kubectl itm "+c) {
				t.Errorf("%s %s lacks usage or examples:\n%s", c, help, out)
			}
		}
	}
	for _, args := range [][]string{
		{"why", "lt-1"}, {"why", "a", "b", "c"}, {"windows", "extra"}, {"schedule"}, {"schedule", "a", "b"},
		{"approve"}, {"approve", "a", "b", "c"}, {"deny", "a"}, {"status"}, {"enroll"}, {"enroll", "a", "b"},
	} {
		_, errOut, clients, err := plugin(t, nil, args...)
		if err == nil || clients != 0 || !strings.Contains(err.Error(), "arg(s)") && !strings.Contains(err.Error(), "unknown command") || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%v: err %v, %d clients, stderr:\n%s", args, err, clients, errOut)
		}
	}
	// Positive control: the right count does make a client.
	if _, _, clients, _ := plugin(t, nil, "schedule", "ring1"); clients != 1 {
		t.Errorf("schedule ring1 made %d clients", clients)
	}
	if _, _, _, err := plugin(t, nil, "nope"); err == nil || !strings.Contains(err.Error(), `unknown command "nope" for "kubectl itm"`) {
		t.Errorf("unknown command: %v", err)
	}
}

func TestVersionCommandAndFlagPrintTheSameLine(t *testing.T) {
	a, _, _, err1 := plugin(t, nil, "version")
	b, _, _, err2 := plugin(t, nil, "--version")
	if err1 != nil || err2 != nil || a != b || !strings.HasPrefix(a, "kubectl-itm ") {
		t.Errorf("version %q (%v), --version %q (%v)", a, err1, b, err2)
	}
	// -v is kubectl's verbosity, not cobra's default version shorthand.
	if _, _, _, err := plugin(t, nil, "-v"); err == nil {
		t.Error("-v was accepted as --version")
	}
}

func TestOutputFlagRefusesAnUnknownFormat(t *testing.T) {
	_, _, clients, err := plugin(t, nil, "windows", "-o", "wide")
	if err == nil || !strings.Contains(err.Error(), `output format "wide"`) || clients != 0 {
		t.Errorf("-o wide: %v, %d clients", err, clients)
	}
}

// TestReadCommandsPrintTheDocumentedStructure: -o json and -o yaml print
// the report structures (same fields in both), not the raw objects.
func TestReadCommandsPrintTheDocumentedStructure(t *testing.T) {
	window := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "ring1"}, Spec: itmv1.MaintenanceWindowSpec{
		TimeZone: "Europe/Berlin",
		Windows:  []itmv1.Window{{Schedule: "30 2 * * SUN", Duration: metav1.Duration{Duration: 2 * time.Hour}}},
		Blackouts: []itmv1.Blackout{{Start: &metav1.Time{Time: time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC)},
			End: &metav1.Time{Time: time.Date(2026, 4, 6, 0, 0, 0, 0, time.UTC)}}},
	}}
	person := &itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "ada"},
		Spec:   itmv1.OnboardingRequestSpec{Person: itmv1.Person{DisplayName: "Ada", Email: "ada@example.com"}, Groups: []string{"eng"}},
		Status: itmv1.OnboardingRequestStatus{Phase: itmv1.OnboardingPhaseActive}}
	laptop := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1"}, Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Assignee: "ada", Addresses: []string{"10.0.0.7"}}}
	policy := &itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki"}, Spec: itmv1.AccessPolicySpec{Subjects: itmv1.Subjects{Groups: []string{"eng"}}}}
	objs := []client.Object{window, person, laptop, policy}

	decode := func(t *testing.T, format string, args ...string) map[string]any {
		t.Helper()
		out, _, _, err := plugin(t, objs, append(args, "-o", format)...)
		if err != nil {
			t.Fatalf("%v -o %s: %v", args, format, err)
		}
		data := []byte(out)
		if format == outputYAML {
			if data, err = yaml.YAMLToJSON(data); err != nil {
				t.Fatalf("%v -o yaml is not YAML: %v\n%s", args, err, out)
			}
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%v -o %s: %v\n%s", args, format, err, out)
		}
		return m
	}
	for _, format := range []string{outputJSON, outputYAML} {
		t.Run(format, func(t *testing.T) {
			w := decode(t, format, "why", "lt-1", "wiki")
			if w["verdict"] != verdictAllowed || w["device"] != "lt-1" || w["policy"] != "wiki" {
				t.Errorf("why: %v", w)
			}
			if checks, _ := w["checks"].([]any); len(checks) == 0 || checks[0].(map[string]any)["requirement"] != "subjects" {
				t.Errorf("why checks: %v", w["checks"])
			}
			if addrs, _ := w["addresses"].([]any); len(addrs) != 1 || addrs[0] != "10.0.0.7/32" && addrs[0] != "10.0.0.7" {
				t.Errorf("why addresses: %v", w["addresses"])
			}
			ws := decode(t, format, "windows")
			list, _ := ws["windows"].([]any)
			if len(list) != 1 {
				t.Fatalf("windows: %v", ws)
			}
			first := list[0].(map[string]any)
			if first["name"] != "ring1" || first["timeZone"] != "Europe/Berlin" || first["open"] != false ||
				first["next"].(map[string]any)["start"] != "2026-03-29T01:00:00Z" {
				t.Errorf("windows: %v", first)
			}
			s := decode(t, format, "schedule", "ring1", "--count", "2")
			openings, _ := s["openings"].([]any)
			if len(openings) != 2 || openings[1].(map[string]any)["blackoutUntil"] != "2026-04-06T00:00:00Z" ||
				openings[0].(map[string]any)["duration"] != "2h0m0s" {
				t.Errorf("schedule: %v", s)
			}
			st := decode(t, format, "status", "ada")
			access, _ := st["access"].([]any)
			if st["user"] != "ada" || st["phase"] != "Active" || st["approval"].(map[string]any)["state"] != "Pending" || len(access) != 1 {
				t.Fatalf("status: %v", st)
			}
			devs := access[0].(map[string]any)["devices"].([]any)
			if devs[0].(map[string]any)["name"] != "lt-1" || devs[0].(map[string]any)["allowed"] != true {
				t.Errorf("status access: %v", access)
			}
		})
	}
}

// TestTablesUseKubectlSpacing: list tables are laid out as kubectl get
// lays them out (upper-case headers, three spaces between columns,
// <none> for an empty cell).
func TestTablesUseKubectlSpacing(t *testing.T) {
	never := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "w"}, Spec: itmv1.MaintenanceWindowSpec{
		Windows: []itmv1.Window{{Schedule: "0 0 30 2 *", Duration: metav1.Duration{Duration: time.Hour}}}}}
	out, _, _, err := plugin(t, []client.Object{never}, "windows")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "NAME   ZONE   OPEN   NEXT OPENING (WINDOW ZONE)   LOCAL    UTC      PROGRESS" {
		t.Errorf("header %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "w      UTC    no     never                        <none>   <none>   0 done") {
		t.Errorf("row %q", lines[1])
	}
}

func TestCompletionListsObjectNames(t *testing.T) {
	objs := []client.Object{
		&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1"}},
		&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-2"}},
		&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "srv-1"}},
		&itmv1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Name: "wiki"}},
		&itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "ring1"}},
		&itmv1.OnboardingRequest{ObjectMeta: metav1.ObjectMeta{Name: "ada"}},
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"why", ""}, "lt-1\nlt-2\nsrv-1\n:4\n"},
		{[]string{"why", "lt"}, "lt-1\nlt-2\n:4\n"},
		{[]string{"why", "lt-1", ""}, "wiki\n:4\n"},
		{[]string{"why", "lt-1", "wiki", ""}, ":4\n"},
		{[]string{"schedule", ""}, "ring1\n:4\n"},
		{[]string{"status", ""}, "ada\n:4\n"},
		{[]string{"approve", ""}, "ada\n:4\n"},
		{[]string{"deny", ""}, "ada\n:4\n"},
		{[]string{"enroll", "s"}, "srv-1\n:4\n"},
		{[]string{"windows", "-o", ""}, "table\njson\nyaml\n:4\n"},
	} {
		out, _, _, err := plugin(t, objs, append([]string{"__complete"}, tt.args...)...)
		if err != nil || !strings.HasPrefix(out, tt.want) {
			t.Errorf("__complete %q = %q (%v), want %q", tt.args, out, err, tt.want)
		}
	}
	// A completion that cannot reach the cluster completes nothing.
	var out bytes.Buffer
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: genericiooptions.IOStreams{Out: &out, ErrOut: &out},
		now: time.Now, local: time.UTC, newClient: func() (client.Client, error) { return nil, errors.New("no cluster") }}
	cmd := newRootCmdWith(o)
	cmd.SetArgs([]string{"__complete", "why", ""})
	if err := cmd.Execute(); err != nil || !strings.HasPrefix(out.String(), ":4\n") {
		t.Errorf("unreachable cluster: %q %v", out.String(), err)
	}
}

func TestCompletionScriptsForEveryShell(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, clients, err := plugin(t, nil, "completion", sh)
		if err != nil || clients != 0 || !strings.Contains(out, "kubectl-itm") {
			t.Errorf("completion %s: %v, %d clients, %d bytes", sh, err, clients, len(out))
		}
	}
}

// TestKubectlFlagsOnEveryCommand: kubectl's connection flags are the
// plugin's, on every command, with kubectl's names (the issue's
// "flag provided but not defined" for --kubeconfig is gone).
func TestKubectlFlagsOnEveryCommand(t *testing.T) {
	root := newRootCmd(genericiooptions.NewTestIOStreamsDiscard())
	for _, c := range root.Commands() {
		for _, name := range []string{"kubeconfig", "context", "cluster", "user", "as", "as-group", "as-uid", "namespace",
			"request-timeout", "server", "token", "certificate-authority", "insecure-skip-tls-verify", "devices-namespace"} {
			if c.InheritedFlags().Lookup(name) == nil && c.Flags().Lookup(name) == nil {
				t.Errorf("%s has no --%s", c.Name(), name)
			}
		}
	}
	if f := root.PersistentFlags().ShorthandLookup("n"); f == nil || f.Name != "namespace" {
		t.Error("-n is not --namespace")
	}
	_, _, _, err := plugin(t, nil, "--kubeconfig", "/dev/null", "--context", "x", "--as", "a", "--as-group", "g", "--request-timeout", "5s", "-n", "x", "windows")
	if err != nil {
		t.Errorf("kubectl flags before the command: %v", err)
	}
}
