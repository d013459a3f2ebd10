package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateDirThatIsASymlinkIsRefusedAndItsTargetKept(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "victim")
	mustWrite(t, filepath.Join(target, "var", "precious"))
	dir := filepath.Join(root, ".cluster")
	if err := os.Symlink(target, dir); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDir(dir); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("checkStateDir of a symlink: %v", err)
	}
	if err := freshStateDir(dir); err == nil {
		t.Error("freshStateDir followed a symlink")
	}
	if _, err := os.Stat(filepath.Join(target, "var", "precious")); err != nil {
		t.Errorf("the symlink's target lost a file: %v", err)
	}
}

// TestStateDirWritableOrOwnedByOthersIsRefused runs as any user: the
// directory and host.json belong to the test's own uid, and "owned by
// another user" is the same files checked against another owner (make
// cluster checks against root's).
func TestStateDirWritableOrOwnedByOthersIsRefused(t *testing.T) {
	me := uint32(os.Geteuid())
	other := me + 1
	dir := filepath.Join(t.TempDir(), ".cluster")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirOwnedBy(dir, me); err != nil {
		t.Fatalf("a private state directory of its owner is refused: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirOwnedBy(dir, me); err == nil {
		t.Error("a world-writable state directory is accepted")
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirOwnedBy(dir, other); err == nil || !strings.Contains(err.Error(), "not owned by") {
		t.Errorf("a state directory owned by another user is accepted: %v", err)
	}
	hj := filepath.Join(dir, "host.json")
	if err := os.WriteFile(hj, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirOwnedBy(dir, me); err != nil {
		t.Errorf("a private host.json is refused: %v", err)
	}
	if err := checkPrivate(hj, false, other); err == nil {
		t.Error("a host.json owned by another user is accepted")
	}
	for name, change := range map[string]func() error{
		"other-writable":     func() error { return os.Chmod(hj, 0o666) },
		"a symlink":          func() error { _ = os.Remove(hj); return os.Symlink("/etc/passwd", hj) },
		"not a regular file": func() error { _ = os.Remove(hj); return os.Mkdir(hj, 0o700) },
	} {
		_ = os.RemoveAll(hj)
		if err := os.WriteFile(hj, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := change(); err != nil {
			t.Fatal(err)
		}
		if err := checkStateDirOwnedBy(dir, me); err == nil {
			t.Errorf("a host.json that is %s is accepted", name)
		}
	}
}

func TestForgedSnapshotIsRefused(t *testing.T) {
	ok := Snapshot{Sysctls: map[string]string{"net.ipv4.ip_forward": "0", "kernel.panic": "0"}, Paths: map[string]bool{"/run/netns": false}}
	if err := validateSnapshot(ok); err != nil {
		t.Fatalf("a real snapshot is refused: %v", err)
	}
	for name, s := range map[string]Snapshot{
		"unknown sysctl":      {Sysctls: map[string]string{"kernel.modprobe": "0"}},
		"non-integer value":   {Sysctls: map[string]string{"net.ipv4.ip_forward": "1\nkernel.core_pattern=|/tmp/x"}},
		"path outside":        {Paths: map[string]bool{"/var": false}},
		"fixed path prefixed": {Paths: map[string]bool{"/var/lib/kubelet/../..": false}},
	} {
		if err := validateSnapshot(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRemoveTreeStaysInsideTheStateDirectoryAndOffMounts(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".cluster")
	outside := filepath.Join(root, "outside")
	mustWrite(t, filepath.Join(outside, "keep"))
	mustWrite(t, filepath.Join(dir, "var", "lib", "x"))
	mustWrite(t, filepath.Join(dir, "run", "pod", "volume", "data"))
	if err := os.Symlink(outside, filepath.Join(dir, "opt")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, root, outside, "/var", dir + "-other", filepath.Join(dir, "..", "outside"), "var"} {
		if err := removeTree(p, dir, nil); err == nil {
			t.Errorf("removeTree(%s) is allowed", p)
		}
	}
	// A symlink in the state directory: the link goes, not its target.
	if err := removeTree(filepath.Join(dir, "opt"), dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("the symlink's target lost a file: %v", err)
	}
	// Something still mounted under it (a pod's volume): refused, kept.
	if err := removeTree(filepath.Join(dir, "run"), dir, []string{"/", filepath.Join(dir, "run", "pod", "volume")}); err == nil {
		t.Error("removed a tree with a mount under it")
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "pod", "volume", "data")); err != nil {
		t.Errorf("the mounted volume lost a file: %v", err)
	}
	if err := removeTree(filepath.Join(dir, "var"), dir, []string{"/", filepath.Join(dir, "run", "pod", "volume")}); err != nil {
		t.Errorf("removeTree inside the state directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "var")); err == nil {
		t.Error("var stays")
	}
}

func TestFreshStateDirIsPrivateAndKeepsThePreviousLogs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".cluster")
	if err := freshStateDir(dir); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "logs", "etcd.log"))
	mustWrite(t, filepath.Join(dir, "logs.previous", "old.log"))
	mustWrite(t, filepath.Join(dir, "pki", "ca.key"))
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := freshStateDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "logs.previous" {
		t.Errorf("entries %v, want logs.previous only", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs.previous", "etcd.log")); err != nil {
		t.Errorf("the last run's logs are not logs.previous: %v", err)
	}
}
