package version

import (
	"bytes"
	"testing"
)

func TestPrintIsProgramVersionAndCommit(t *testing.T) {
	oldVersion, oldCommit := Version, Commit
	t.Cleanup(func() { Version, Commit = oldVersion, oldCommit })
	Version, Commit = "v0.1.0", "abc1234"

	var out bytes.Buffer
	Print(&out, "itmanager-agent")
	if got, want := out.String(), "itmanager-agent v0.1.0 (commit abc1234)\n"; got != want {
		t.Errorf("Print = %q, want %q", got, want)
	}
}

func TestCommitFallsBackToTheBuildsRevisionOnlyWhenNotLinked(t *testing.T) {
	rev := map[string]string{"vcs.revision": "0123456789abcdef0123456789abcdef01234567"}
	dirty := map[string]string{"vcs.revision": "0123456789abcdef", "vcs.modified": "true"}
	for name, c := range map[string]struct {
		linked   string
		settings map[string]string
		want     string
	}{
		"linked wins over the build info":     {"abc1234", rev, "abc1234"},
		"not linked: the revision, shortened": {"unknown", rev, "0123456"},
		"not linked, modified tree: dirty":    {"unknown", dirty, "0123456-dirty"},
		"not linked, no build info: unknown":  {"unknown", nil, "unknown"},
		"empty linked value counts as unset":  {"", rev, "0123456"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := commit(c.linked, c.settings); got != c.want {
				t.Errorf("commit(%q) = %q, want %q", c.linked, got, c.want)
			}
		})
	}
}
