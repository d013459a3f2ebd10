package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/itmanager-io/itmanager/internal/rollout"
)

var at = time.Date(2026, 12, 1, 19, 30, 0, 0, time.UTC)

func now() time.Time { return at }

func configFor(t *testing.T, env map[string]string, args ...string) config {
	t.Helper()
	dir := t.TempDir()
	args = append([]string{"--marker", filepath.Join(dir, "host", "var", "lib", "itmanager-e2e", "upgraded"),
		"--termination-log", filepath.Join(dir, "termination-log")}, args...)
	c, err := parseConfig(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestSuccessReportsTheTargetAsTheControllerParsesIt: the termination
// message is a version report the manager accepts (rollout.ParseVersionReport)
// naming the Job's $TARGET_VERSION, and the marker under /host says what
// was installed where and when.
func TestSuccessReportsTheTargetAsTheControllerParsesIt(t *testing.T) {
	c := configFor(t, map[string]string{"TARGET_VERSION": "1.36.3-e2e", "NODE_NAME": "node-1"})
	if code := run(context.Background(), c, now, io.Discard); code != 0 {
		t.Fatalf("exit code %d, want 0; termination message %q", code, read(t, c.terminationLog))
	}
	got, err := rollout.ParseVersionReport(read(t, c.terminationLog))
	if err != nil || got != "1.36.3-e2e" {
		t.Errorf("the manager reads the report as %q, %v; want 1.36.3-e2e", got, err)
	}
	if got, want := read(t, c.marker), "version=1.36.3-e2e\nnode=node-1\ntime=2026-12-01T19:30:00Z\n"; got != want {
		t.Errorf("marker %q, want %q", got, want)
	}
}

func TestTargetVersionSources(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"the Job's TARGET_VERSION":                    {map[string]string{"TARGET_VERSION": "2.0", "ITMANAGER_TARGET_VERSION": "1.0"}, nil, "2.0"},
		"an agent command's ITMANAGER_TARGET_VERSION": {map[string]string{"ITMANAGER_TARGET_VERSION": "1.0"}, nil, "1.0"},
		"the flag wins":                               {map[string]string{"TARGET_VERSION": "2.0"}, []string{"--target-version=3.0"}, "3.0"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := configFor(t, tc.env, tc.args...).target; got != tc.want {
				t.Errorf("target %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReportVersionOverridesOnlyTheReport: a test can make the image
// report something other than what it installed (a mismatch, or garbage
// the manager must refuse).
func TestReportVersionOverridesOnlyTheReport(t *testing.T) {
	c := configFor(t, map[string]string{"TARGET_VERSION": "2.0"}, "--report-version=2.0; rm -rf /")
	if code := run(context.Background(), c, now, io.Discard); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if got := read(t, c.terminationLog); got != "itmanager.io/os-version=2.0; rm -rf /\n" {
		t.Errorf("termination message %q", got)
	}
	if _, err := rollout.ParseVersionReport(read(t, c.terminationLog)); err == nil {
		t.Error("the manager accepts the garbage report")
	}
	if !strings.HasPrefix(read(t, c.marker), "version=2.0\n") {
		t.Errorf("marker %q does not name the installed version", read(t, c.marker))
	}
}

// TestFailingWritesTheReasonLeavesNoMarkerAndExits1: --fail and FAIL=1
// alike; the reason is what the Device's status will show.
func TestFailingWritesTheReasonLeavesNoMarkerAndExits1(t *testing.T) {
	for name, c := range map[string]config{
		"--fail": configFor(t, map[string]string{"TARGET_VERSION": "2.0"}, "--fail", "--fail-reason=disk full"),
		"FAIL=1": configFor(t, map[string]string{"TARGET_VERSION": "2.0", "FAIL": "1"}, "--fail-reason=disk full"),
	} {
		if code := run(context.Background(), c, now, io.Discard); code != 1 {
			t.Errorf("%s: exit code %d, want 1", name, code)
		}
		msg := read(t, c.terminationLog)
		if msg != "upgrade failed: disk full\n" {
			t.Errorf("%s: termination message %q", name, msg)
		}
		if _, err := rollout.ParseVersionReport(msg); err == nil {
			t.Errorf("%s: the failure reads as a version report", name)
		}
		if _, err := os.Stat(c.marker); !os.IsNotExist(err) {
			t.Errorf("%s: a marker was written (%v)", name, err)
		}
	}
}

func TestNoTargetVersionFails(t *testing.T) {
	c := configFor(t, nil)
	if code := run(context.Background(), c, now, io.Discard); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if msg := read(t, c.terminationLog); !strings.HasPrefix(msg, "upgrade failed: no target version") {
		t.Errorf("termination message %q", msg)
	}
}

// TestInterruptedUpgradeFails: SIGTERM (the Job's deadline, a deleted Pod)
// during --duration is a failure, not a report.
func TestInterruptedUpgradeFails(t *testing.T) {
	c := configFor(t, map[string]string{"TARGET_VERSION": "2.0"}, "--duration=1h")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := run(ctx, c, now, io.Discard); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if msg := read(t, c.terminationLog); !strings.HasPrefix(msg, "upgrade failed: interrupted") {
		t.Errorf("termination message %q", msg)
	}
}

func TestUnexpectedArgumentsAreRefused(t *testing.T) {
	if _, err := parseConfig([]string{"2.0"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("a positional argument is accepted")
	}
}

func TestThePrefixIsTheManagers(t *testing.T) {
	if versionReportPrefix != rollout.VersionReportPrefix {
		t.Errorf("the image reports %q, the manager reads %q", versionReportPrefix, rollout.VersionReportPrefix)
	}
}
