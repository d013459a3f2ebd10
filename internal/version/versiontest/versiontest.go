// Package versiontest runs a command's main in a child process of the test
// binary, so a test can check what --version prints and that it exits 0
// without building the command. Only tests import it.
package versiontest

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// childEnv names the test the child process runs main for.
const childEnv = "ITMANAGER_VERSIONTEST_MAIN"

// Line matches what version.Print writes for program: "<program>
// <version> (commit <commit>)" and a newline, nothing else.
func Line(program string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(program) + ` \S+ \(commit \S+\)\n$`)
}

// Main re-runs the calling test in a child process in which main runs with
// args as its command line, and returns the child's standard output. In
// the child, Main does not return: it runs main and exits 0 (or main
// exits by itself). A child that fails fails the test, with its stderr.
func Main(t *testing.T, main func(), args ...string) string {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		os.Args = append([]string{"main"}, args...)
		main()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("main %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
