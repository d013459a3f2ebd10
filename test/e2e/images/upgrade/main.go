// Command upgrade is the e2e suite's node upgrade image, for a
// MaintenanceWindow's nodeUpgrade. The upgrade Job runs it privileged on the
// node with the node's root filesystem at /host and the target version in
// $TARGET_VERSION (controllers/nodeupgrade_job.go). It "upgrades" the node
// by writing a marker file under /host (the version, the node and the time),
// reports the version in its termination message as
// itmanager.io/os-version=<version> and exits 0. Told to fail (--fail or
// FAIL=1) it writes the reason to the termination message instead and exits
// 1, leaving the marker alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// versionReportPrefix is what the termination message starts with
// (rollout.VersionReportPrefix, not imported: this image links only the
// standard library).
const versionReportPrefix = "itmanager.io/os-version="

type config struct {
	target         string // the version to "install"
	report         string // the version to report (default: target)
	marker         string
	terminationLog string
	node           string
	fail           bool
	failReason     string
	duration       time.Duration
}

func main() {
	c, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, c, time.Now, os.Stderr))
}

// parseConfig reads the flags, with defaults from the environment the
// upgrade Job sets (TARGET_VERSION, NODE_NAME; ITMANAGER_TARGET_VERSION as
// an agent's upgrade command gets it) and FAIL=1.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := getenv("TARGET_VERSION")
	if target == "" {
		target = getenv("ITMANAGER_TARGET_VERSION")
	}
	fs.StringVar(&c.target, "target-version", target, "Version to install (default $TARGET_VERSION, else $ITMANAGER_TARGET_VERSION).")
	fs.StringVar(&c.report, "report-version", "", "Version to report in the termination message (default: the target version).")
	fs.StringVar(&c.marker, "marker", "/host/var/lib/itmanager-e2e/upgraded", "Marker file written on success (under /host: the node's root).")
	fs.StringVar(&c.terminationLog, "termination-log", "/dev/termination-log", "Where the termination message goes (the container's terminationMessagePath).")
	fs.StringVar(&c.node, "node", getenv("NODE_NAME"), "Node name written into the marker (default $NODE_NAME).")
	fs.BoolVar(&c.fail, "fail", getenv("FAIL") == "1", "Fail: report the reason and exit 1 (default: FAIL=1 in the environment).")
	fs.StringVar(&c.failReason, "fail-reason", "the e2e upgrade image was told to fail", "Reason written to the termination message when failing.")
	fs.DurationVar(&c.duration, "duration", 0, "How long the upgrade takes before it finishes (SIGTERM cuts it short, as a failure).")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "upgrade: unexpected arguments %q\n", fs.Args())
		return c, errors.New("unexpected arguments")
	}
	if c.report == "" {
		c.report = c.target
	}
	return c, nil
}

// run does the upgrade and returns the exit code; what it says about the
// outcome is in the termination log (and stderr, the Pod's log).
func run(ctx context.Context, c config, now func() time.Time, stderr io.Writer) int {
	outcome, code := upgrade(ctx, c, now)
	fmt.Fprintln(stderr, outcome)
	if err := os.WriteFile(c.terminationLog, []byte(outcome+"\n"), 0o644); err != nil {
		fmt.Fprintln(stderr, "upgrade: write the termination message:", err)
		return 1
	}
	return code
}

// upgrade is the termination message and the exit code.
func upgrade(ctx context.Context, c config, now func() time.Time) (string, int) {
	if c.duration > 0 {
		select {
		case <-ctx.Done():
			return "upgrade failed: interrupted after starting", 1
		case <-time.After(c.duration):
		}
	}
	if c.fail {
		return "upgrade failed: " + c.failReason, 1
	}
	if c.target == "" {
		return "upgrade failed: no target version (set TARGET_VERSION or --target-version)", 1
	}
	if err := writeMarker(c.marker, markerContent(c, now())); err != nil {
		return "upgrade failed: " + err.Error(), 1
	}
	return versionReport(c.report), 0
}

// versionReport is the termination message of a successful upgrade.
func versionReport(version string) string { return versionReportPrefix + version }

func markerContent(c config, at time.Time) string {
	return fmt.Sprintf("version=%s\nnode=%s\ntime=%s\n", c.target, c.node, at.UTC().Format(time.RFC3339))
}

// writeMarker writes the marker whole or not at all (temporary file, then
// rename), creating its directory.
func writeMarker(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create the marker's directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write the marker: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the marker: %w", err)
	}
	return nil
}
