// Package version is the version and commit every itmanager binary was
// built from, stamped by the linker:
//
//	go build -ldflags "-X github.com/itmanager-io/itmanager/internal/version.Version=v0.1.0 \
//	  -X github.com/itmanager-io/itmanager/internal/version.Commit=abc1234"
//
// It imports nothing but the standard library, so the agent can link it.
package version

import (
	"fmt"
	"io"
	"runtime/debug"
)

// Version and Commit are set by the linker (-X); they are variables, not
// constants, for that reason alone.
var (
	// Version is the release, as `git describe --tags --always --dirty`
	// gives it (e.g. v0.1.0, v0.1.0-3-gabc1234-dirty).
	Version = "dev"
	// Commit is the short commit hash (`git rev-parse --short HEAD`).
	Commit = "unknown"
)

// String is "<version> (commit <commit>)". When the linker did not set the
// commit, the one Go recorded at build time (vcs.revision, as `go build`
// in a checkout stamps it) stands in, shortened, with "-dirty" when the
// tree had changes.
func String() string {
	return format(Version, commit(Commit, buildSettings()))
}

// Print writes "<program> <version> (commit <commit>)" and a newline to w:
// what every binary's --version prints.
func Print(w io.Writer, program string) {
	_, _ = fmt.Fprintf(w, "%s %s\n", program, String())
}

func format(version, commit string) string {
	return fmt.Sprintf("%s (commit %s)", version, commit)
}

// commit is the linker's commit unless that is the default, else the
// build's vcs.revision (shortened to 7 characters, "-dirty" when
// vcs.modified), else the default.
func commit(linked string, settings map[string]string) string {
	if linked != "unknown" && linked != "" {
		return linked
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if settings["vcs.modified"] == "true" {
		rev += "-dirty"
	}
	return rev
}

func buildSettings() map[string]string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	settings := make(map[string]string, len(info.Settings))
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	return settings
}
