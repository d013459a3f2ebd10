package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// checkPrivate refuses a state directory or host.json that another user
// could have made or changed: a root process must not follow .cluster ->
// / into RemoveAll, nor let a forged host.json decide what it removes and
// which sysctls it writes. A missing path is fine (it is made private).
// owner is the uid it must belong to (root's, 0, for make cluster).
func checkPrivate(p string, wantDir bool, owner uint32) error {
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink: refusing to follow it as root (remove it)", p)
	case wantDir && !st.IsDir(), !wantDir && !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a %s", p, map[bool]string{true: "directory", false: "regular file"}[wantDir])
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by group or others (%v): refusing it", p, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != owner {
		return fmt.Errorf("%s is not owned by uid %d: refusing it (remove it; make cluster makes it again)", p, owner)
	}
	return nil
}

// checkStateDir checks .cluster and, when present, its host.json.
func checkStateDir(dir string) error { return checkStateDirOwnedBy(dir, 0) }

// checkStateDirOwnedBy is checkStateDir for a state directory that must
// belong to owner.
func checkStateDirOwnedBy(dir string, owner uint32) error {
	if err := checkPrivate(dir, true, owner); err != nil {
		return err
	}
	return checkPrivate(filepath.Join(dir, "host.json"), false, owner)
}

// validateSnapshot refuses a host.json that says more than takeSnapshot
// writes: sysctls only of the fixed list, as integers; paths only the
// fixed ones.
func validateSnapshot(s Snapshot) error {
	for k, v := range s.Sysctls {
		if !slices.Contains(sysctls, k) {
			return fmt.Errorf("host.json: sysctl %q is not one the cluster sets or watches", k)
		}
		if _, err := strconv.Atoi(v); err != nil {
			return fmt.Errorf("host.json: sysctl %s = %q is not an integer", k, v)
		}
	}
	for p := range s.Paths {
		if !slices.Contains(fixedPaths, p) {
			return fmt.Errorf("host.json: path %q is not one of the node's fixed paths", p)
		}
	}
	return nil
}

// removeTree is the only recursive delete of hack/cluster: p must be
// strictly inside the state directory or one of the fixed paths, not a
// symlink's target, and nothing may be mounted under it (RemoveAll would
// descend into a pod's volume, a hostPath among them).
func removeTree(p, stateDir string, mountPoints []string) error {
	p = filepath.Clean(p)
	inside := under(p, stateDir) && p != stateDir
	if !filepath.IsAbs(p) || (!inside && !slices.Contains(fixedPaths, p)) {
		return fmt.Errorf("refusing to remove %s: outside the state directory %s", p, stateDir)
	}
	for _, m := range mountPoints {
		if under(m, p) {
			return fmt.Errorf("refusing to remove %s: %s is mounted under it", p, m)
		}
	}
	if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSymlink != 0 {
		return os.Remove(p) // the link, never what it points to
	}
	return os.RemoveAll(p)
}

// currentMountPoints lists the mount points of this mount namespace.
func currentMountPoints() []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"/"} // unknown: refuse every removal
	}
	var out []string
	for _, m := range parseMountinfo(string(data)) {
		out = append(out, mountPoint(m))
	}
	return out
}

// freshStateDir empties dir (made 0700 if missing) but for its logs, which
// become logs.previous. Only entries of dir are removed.
func freshStateDir(dir string) error {
	if err := checkPrivate(dir, true, 0); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	mounts := currentMountPoints()
	for _, e := range entries {
		if e.Name() == "logs" {
			continue
		}
		if err := removeTree(filepath.Join(dir, e.Name()), dir, mounts); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(dir, "logs"), filepath.Join(dir, "logs.previous")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
