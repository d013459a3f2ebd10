//go:build integration

// Package packages tests the agent's packages and install script as a host
// would meet them: hack/build-packages.sh builds the .deb, .rpm and tarball
// with the pinned nfpm (NFPM, set by make test), dpkg installs the .deb into
// a scratch root (never onto this machine: --root, and the maintainer
// scripts run with $DPKG_ROOT and no systemd of this host), and the install
// script installs into scratch roots. Needs dpkg, systemd-analyze, rpm and
// shellcheck (hack/install-node-packages.sh package-tests installs them).
package packages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

const (
	// binaryVersion is stamped into the test build; packageVersion is the
	// packages' version derived from it.
	binaryVersion  = "v0.0.0-pkgtest.1"
	packageVersion = "0.0.0-pkgtest.1"
	testCommit     = "abc1234"
	// debVersion is dpkg's: nfpm writes a semver prerelease with ~ (sorts
	// before the release) and adds the package release.
	debVersion = "0.0.0~pkgtest.1-1"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// requireTools fails (never skips) when a tool the tests need is missing.
func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"dpkg", "systemd-analyze", "rpm", "shellcheck", "tar", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run hack/install-node-packages.sh package-tests (as root), as make test does", tool)
		}
	}
	if os.Getenv("NFPM") == "" {
		t.Fatal("NFPM is unset: run through make test, or NFPM=$PWD/bin/nfpm-v2.45.2 after make bin/nfpm-v2.45.2")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the package tests install into scratch roots with root's owners: run them as root")
	}
}

// artifacts builds the release artifacts for this machine's architecture
// once per test binary, with the pinned nfpm, and returns their directory.
func artifacts(t *testing.T) string {
	t.Helper()
	requireTools(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "itm-packages-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = filepath.Join(dir, "out")
		cmd := exec.Command(filepath.Join(repoRoot(t), "hack/build-packages.sh"), buildDir, binaryVersion, testCommit)
		cmd.Env = append(os.Environ(), "ARCHES="+runtime.GOARCH)
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("hack/build-packages.sh: %v\n%s", buildErr, buildOut)
	}
	return buildDir
}

func debName() string {
	return "itmanager-agent_" + packageVersion + "_linux_" + runtime.GOARCH + ".deb"
}

func rpmName() string {
	a := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	return "itmanager-agent-" + packageVersion + "-1." + a + ".rpm"
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tree lists every path under root (relative, with its mode and owner) but
// dpkg's own database.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if rel == "var/lib/dpkg" || strings.HasPrefix(rel, "var/lib/dpkg/") {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		paths[rel] = info.Mode().String() + " " + itoa(st.Uid) + ":" + itoa(st.Gid)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// scratchDpkgRoot is an empty root with an empty dpkg database.
func scratchDpkgRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func dpkg(t *testing.T, root string, args ...string) {
	t.Helper()
	run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless"}, args...)...)
}

// expectedFiles are the package's paths with mode and owner.
var expectedFiles = map[string]string{
	"usr/bin/itmanager-agent":                        "-rwxr-xr-x 0:0",
	"usr/lib/systemd/system/itmanager-agent.service": "-rw-r--r-- 0:0",
	"usr/share/itmanager-agent/upgrade-command.conf": "-rw-r--r-- 0:0",
	"etc/default/itmanager-agent":                    "-rw-r--r-- 0:0",
	"etc/itmanager-agent":                            "drwx------ 0:0",
	"var/lib/itmanager-agent":                        "drwx------ 0:0",
}

func TestDebInstallsFilesOwnersAndModesRunsVersionThenRemovesKeepingEnrolmentAndPurgesEverything(t *testing.T) {
	dir := artifacts(t)
	root := scratchDpkgRoot(t)
	before := tree(t, root)

	dpkg(t, root, "-i", filepath.Join(dir, debName()))
	after := tree(t, root)
	for p, want := range expectedFiles {
		if got := after[p]; got != want {
			t.Errorf("%s after install: %q, want %q", p, got, want)
		}
	}
	// postinst enabled the unit offline, inside the root only.
	wants := "etc/systemd/system/multi-user.target.wants/itmanager-agent.service"
	if link, err := os.Readlink(filepath.Join(root, wants)); err != nil || link != "/usr/lib/systemd/system/itmanager-agent.service" {
		t.Errorf("postinst did not enable the unit in the root: %s -> %q (%v)", wants, link, err)
	}
	if conffiles := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${Conffiles}", "itmanager-agent"); !strings.Contains(conffiles, "/etc/default/itmanager-agent") {
		t.Errorf("/etc/default/itmanager-agent is not a conffile: %q", conffiles)
	}

	out := run(t, filepath.Join(root, "usr/bin/itmanager-agent"), "--version")
	if want := "itmanager-agent " + binaryVersion + " (commit " + testCommit + ")\n"; out != want {
		t.Errorf("installed itmanager-agent --version = %q, want %q", out, want)
	}

	// The device's enrolment and state, as the agent and the install script
	// leave them.
	token := filepath.Join(root, "etc/itmanager-agent/token")
	state := filepath.Join(root, "var/lib/itmanager-agent/sequence")
	for _, f := range []string{token, state} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	dpkg(t, root, "-r", "itmanager-agent")
	removed := tree(t, root)
	for _, gone := range []string{"usr/bin/itmanager-agent", "usr/lib/systemd/system/itmanager-agent.service", "usr/share/itmanager-agent/upgrade-command.conf", wants} {
		if _, ok := removed[gone]; ok {
			t.Errorf("%s is left after dpkg -r", gone)
		}
	}
	for _, kept := range []string{"etc/default/itmanager-agent", "etc/itmanager-agent/token", "var/lib/itmanager-agent/sequence"} {
		if _, ok := removed[kept]; !ok {
			t.Errorf("%s is gone after dpkg -r (remove keeps configuration, enrolment and state; only purge removes them)", kept)
		}
	}

	dpkg(t, root, "--purge", "itmanager-agent")
	purged := tree(t, root)
	var left []string
	for p := range purged {
		if _, ok := before[p]; !ok {
			left = append(left, p)
		}
	}
	slices.Sort(left)
	// Directories the package's files needed (usr/bin, etc/systemd/...) may
	// stay only if they are empty parents; dpkg removes what it created.
	var files []string
	for _, p := range left {
		if !strings.HasPrefix(purged[p], "d") {
			files = append(files, p)
		} else if entries, _ := os.ReadDir(filepath.Join(root, p)); len(entries) == 0 {
			files = append(files, p+"/ (empty directory)")
		}
	}
	if len(files) > 0 {
		t.Errorf("left in the scratch root after purge: %v", files)
	}
	// dpkg forgets a purged package (dpkg-query finds none) or lists it not-installed.
	if out, err := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${db:Status-Status}", "itmanager-agent").CombinedOutput(); err == nil && string(out) != "not-installed" {
		t.Errorf("dpkg status after purge = %q, want not-installed", out)
	}
}

func TestUnitPassesSystemdAnalyzeVerifyAloneAndWithTheUpgradeDropIn(t *testing.T) {
	dir := artifacts(t)
	root := scratchDpkgRoot(t)
	dpkg(t, root, "-i", filepath.Join(dir, debName()))
	unit := filepath.Join(root, "usr/lib/systemd/system/itmanager-agent.service")
	// The targets a unit's default dependencies name (sysinit.target, ...),
	// from this host's systemd, so verify can load the unit's graph.
	targets, err := filepath.Glob("/usr/lib/systemd/system/*.target")
	if err != nil || len(targets) == 0 {
		t.Fatalf("no systemd targets under /usr/lib/systemd/system (install systemd: hack/install-node-packages.sh package-tests): %v", err)
	}
	for _, target := range targets {
		data, err := os.ReadFile(target)
		if err != nil {
			continue // a dangling alias
		}
		if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system", filepath.Base(target)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	verify := func(unitPath string) (string, error) {
		// --root resolves ExecStart's /usr/bin/itmanager-agent inside the root.
		out, err := exec.Command("systemd-analyze", "verify", "--root="+root, "--man=no", unitPath).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(unit); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
	}

	dropIns := filepath.Join(root, "etc/systemd/system/itmanager-agent.service.d")
	if err := os.MkdirAll(dropIns, 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, "usr/share/itmanager-agent/upgrade-command.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropIns, "upgrade-command.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(unit); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify with upgrade-command.conf: %v\n%s", err, out)
	}

	// Control: verify does resolve the binary in the root, so a missing one fails.
	if err := os.Remove(filepath.Join(root, "usr/bin/itmanager-agent")); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(unit); err == nil {
		t.Errorf("systemd-analyze verify passed with /usr/bin/itmanager-agent missing from the root:\n%s", out)
	}
}

func TestUnitIsStrictByDefaultAndTheDropInLiftsWhatAnOSUpgradeNeeds(t *testing.T) {
	root := repoRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "packaging/systemd/itmanager-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile(filepath.Join(root, "packaging/systemd/upgrade-command.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Restart=on-failure", "After=network-online.target", "Wants=network-online.target",
		"EnvironmentFile=-/etc/default/itmanager-agent", "ExecStart=/usr/bin/itmanager-agent $ITMANAGER_AGENT_ARGS",
		"ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
		"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "CapabilityBoundingSet=",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK", "WantedBy=multi-user.target",
	} {
		if !hasLine(unit, line) {
			t.Errorf("itmanager-agent.service has no line %q", line)
		}
	}
	// A package manager writes the system, needs root's capabilities and
	// kernel module directories, and new privileges (setuid, SELinux).
	for _, line := range []string{
		"ProtectSystem=no", "ProtectHome=no", "NoNewPrivileges=no", "CapabilityBoundingSet=~",
		"ProtectKernelModules=no", "ProtectKernelTunables=no", "RestrictSUIDSGID=no", "SystemCallFilter=",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
	} {
		if !hasLine(dropIn, line) {
			t.Errorf("upgrade-command.conf has no line %q", line)
		}
	}
}

func hasLine(data []byte, line string) bool {
	return slices.Contains(strings.Split(string(data), "\n"), line)
}

func TestRpmHasMetadataFileListModesAndScripts(t *testing.T) {
	dir := artifacts(t)
	rpmFile := filepath.Join(dir, rpmName())
	wantArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	// nfpm writes a semver prerelease as rpm's ~ (sorts before the release).
	if got, want := run(t, "rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}", rpmFile),
		"itmanager-agent 0.0.0~pkgtest.1 1 "+wantArch+" Apache-2.0"; got != want {
		t.Errorf("rpm metadata = %q, want %q", got, want)
	}
	// --dump: path size mtime digest mode owner group isconfig isdoc ...
	dump := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "rpm", "-qp", "--dump", rpmFile)), "\n") {
		f := strings.Fields(line)
		dump[strings.TrimPrefix(f[0], "/")] = f
	}
	wantModes := map[string]string{
		"usr/bin/itmanager-agent":                        "0100755",
		"usr/lib/systemd/system/itmanager-agent.service": "0100644",
		"usr/share/itmanager-agent/upgrade-command.conf": "0100644",
		"etc/default/itmanager-agent":                    "0100644",
		"etc/itmanager-agent":                            "040700",
		"var/lib/itmanager-agent":                        "040700",
	}
	for p, mode := range wantModes {
		f, ok := dump[p]
		if !ok {
			t.Errorf("the rpm has no /%s (its files: %v)", p, keys(dump))
			continue
		}
		if f[4] != mode || f[5] != "root" || f[6] != "root" {
			t.Errorf("/%s in the rpm: mode %s owner %s:%s, want %s root:root", p, f[4], f[5], f[6], mode)
		}
	}
	if f := dump["etc/default/itmanager-agent"]; len(f) > 7 && f[7] != "1" {
		t.Errorf("/etc/default/itmanager-agent is not a %%config file in the rpm: %v", f)
	}
	if len(dump) != len(wantModes) {
		t.Errorf("the rpm has %d paths, want exactly %v: %v", len(dump), keys(wantModes), keys(dump))
	}
	scripts := run(t, "rpm", "-qp", "--scripts", rpmFile)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "itmanager-agent postinstall", "itmanager-agent preremove", "itmanager-agent postremove"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm --scripts has no %q:\n%s", want, scripts)
		}
	}
}

func keys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for p := range m {
		k = append(k, p)
	}
	slices.Sort(k)
	return k
}

// nfpmPackage is the part of a package definition both nfpm.yaml and
// goreleaser's nfpms declare.
type nfpmPackage struct {
	Name        string `json:"name"`
	PackageName string `json:"package_name"`
	Release     string `json:"release"`
	Section     string `json:"section"`
	Priority    string `json:"priority"`
	Maintainer  string `json:"maintainer"`
	Vendor      string `json:"vendor"`
	Homepage    string `json:"homepage"`
	License     string `json:"license"`
	Description string `json:"description"`
	Contents    []struct {
		Src      string         `json:"src"`
		Dst      string         `json:"dst"`
		Type     string         `json:"type"`
		Expand   bool           `json:"expand"`
		FileInfo map[string]any `json:"file_info"`
	} `json:"contents"`
	Scripts map[string]string `json:"scripts"`
	RPM     map[string]any    `json:"rpm"`
	Deb     map[string]any    `json:"deb"`
}

func TestGoreleaserNfpmsDeclareTheSamePackageAsPackagingNfpmYaml(t *testing.T) {
	root := repoRoot(t)
	var nfpm nfpmPackage
	data, err := os.ReadFile(filepath.Join(root, "packaging/nfpm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal(data, &nfpm); err != nil {
		t.Fatal(err)
	}
	var gr struct {
		NFPMs []nfpmPackage `json:"nfpms"`
	}
	data, err = os.ReadFile(filepath.Join(root, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sigsyaml.Unmarshal(data, &gr); err != nil {
		t.Fatal(err)
	}
	if len(gr.NFPMs) != 1 {
		t.Fatalf(".goreleaser.yaml has %d nfpms, want 1", len(gr.NFPMs))
	}
	g := gr.NFPMs[0]
	// The binary: nfpm.yaml ships $AGENT_BINARY, goreleaser its build in bindir.
	if len(nfpm.Contents) == 0 || nfpm.Contents[0].Dst != "/usr/bin/itmanager-agent" {
		t.Fatalf("packaging/nfpm.yaml's first content is not /usr/bin/itmanager-agent: %+v", nfpm.Contents)
	}
	nfpm.Contents = nfpm.Contents[1:]
	nfpm.PackageName, nfpm.Name = nfpm.Name, ""
	if a, b := mustJSON(t, nfpm), mustJSON(t, g); a != b {
		t.Errorf("the nfpms of .goreleaser.yaml and packaging/nfpm.yaml differ:\nnfpm.yaml:  %s\ngoreleaser: %s", a, b)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := sigsyaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInstallAndMaintainerScriptsPassShellcheck(t *testing.T) {
	requireTools(t)
	root := repoRoot(t)
	run(t, "shellcheck", "-s", "sh",
		filepath.Join(root, "packaging/install-agent.sh"),
		filepath.Join(root, "packaging/scripts/postinstall.sh"),
		filepath.Join(root, "packaging/scripts/preremove.sh"),
		filepath.Join(root, "packaging/scripts/postremove.sh"))
}

// bundleEntry is one tar entry of a test enrolment bundle.
type bundleEntry struct {
	name     string
	typ      byte
	body     string
	linkname string
}

var goodBundle = []bundleEntry{
	{name: "url", typ: tar.TypeReg, body: "https://checkin.example:8443\n"},
	{name: "token", typ: tar.TypeReg, body: "s3cr3t-token\n"},
	{name: "ca.crt", typ: tar.TypeReg, body: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
}

func writeBundle(t *testing.T, entries []bundleEntry) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o600, Size: int64(len(e.body)), Linkname: e.linkname}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o700
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// installScript runs the install script of the artifacts with args.
func installScript(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return installScriptIn(t, "", dir, args...)
}

// installScriptIn runs the script with TMPDIR=tmp (when not empty), where
// it keeps its work directory.
func installScriptIn(t *testing.T, tmp, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{filepath.Join(dir, "install-agent.sh"), "--from", dir}, args...)...)
	if tmp != "" {
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func checkEnrolment(t *testing.T, root string) {
	t.Helper()
	if got := tree(t, root)["etc/itmanager-agent"]; got != "drwx------ 0:0" {
		t.Errorf("etc/itmanager-agent: %q, want drwx------ 0:0", got)
	}
	for _, e := range goodBundle {
		p := filepath.Join(root, "etc/itmanager-agent", e.name)
		info, err := os.Lstat(p)
		if err != nil {
			t.Errorf("enrolment file %s: %v", e.name, err)
			continue
		}
		if info.Mode() != 0o600 {
			t.Errorf("enrolment file %s has mode %v, want -rw-------", e.name, info.Mode())
		}
		if body, _ := os.ReadFile(p); string(body) != e.body {
			t.Errorf("enrolment file %s = %q, want %q", e.name, body, e.body)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "etc/itmanager-agent")); len(entries) != 3 {
		t.Errorf("etc/itmanager-agent holds %d entries, want url, token, ca.crt", len(entries))
	}
}

func TestInstallScriptInstallsTheTarballAndBundleIntoAnEmptyRoot(t *testing.T) {
	dir := artifacts(t)
	root := t.TempDir()
	out, err := installScript(t, dir, "--root", root, "--bundle", writeBundle(t, goodBundle))
	if err != nil {
		t.Fatalf("install-agent.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Verified itmanager-agent_"+packageVersion+"_linux_"+runtime.GOARCH+".tar.gz") {
		t.Errorf("the script did not verify the tarball:\n%s", out)
	}
	got := tree(t, root)
	for p, want := range expectedFiles {
		if got[p] != want {
			t.Errorf("%s: %q, want %q", p, got[p], want)
		}
	}
	checkEnrolment(t, root)
	if v := run(t, filepath.Join(root, "usr/bin/itmanager-agent"), "--version"); !strings.Contains(v, binaryVersion) {
		t.Errorf("installed --version = %q, want %s", v, binaryVersion)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/dpkg")); err == nil {
		t.Error("the tarball install created a dpkg database")
	}
}

func TestInstallScriptInstallsTheDebAndBundleIntoARootWithDpkg(t *testing.T) {
	dir := artifacts(t)
	root := scratchDpkgRoot(t)
	out, err := installScript(t, dir, "--root", root, "--bundle", writeBundle(t, goodBundle))
	if err != nil {
		t.Fatalf("install-agent.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Verified "+debName()) {
		t.Errorf("the script did not verify the .deb:\n%s", out)
	}
	status := run(t, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${db:Status-Status} ${Version}", "itmanager-agent")
	if status != "installed "+debVersion {
		t.Errorf("dpkg status in the root = %q, want installed %s", status, debVersion)
	}
	checkEnrolment(t, root)
}

func TestInstallScriptRefusesAnArtifactWhoseChecksumDoesNotMatch(t *testing.T) {
	src := artifacts(t)
	for name, corrupt := range map[string]func(dir string) error{
		"tarball changed after checksums.txt": func(dir string) error {
			f, err := os.OpenFile(filepath.Join(dir, "itmanager-agent_"+packageVersion+"_linux_"+runtime.GOARCH+".tar.gz"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte{0})
			return err
		},
		"checksums.txt without the tarball": func(dir string) error {
			p := filepath.Join(dir, "checksums.txt")
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var kept []string
			for _, l := range strings.Split(string(data), "\n") {
				if !strings.HasSuffix(l, ".tar.gz") {
					kept = append(kept, l)
				}
			}
			// Keep the version discoverable through --version instead.
			return os.WriteFile(p, []byte(strings.Join(kept, "\n")), 0o644)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := copyDir(t, src)
			if err := corrupt(dir); err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			out, err := installScript(t, dir, "--root", root, "--version", packageVersion, "--bundle", writeBundle(t, goodBundle))
			if err == nil {
				t.Fatalf("install-agent.sh accepted it:\n%s", out)
			}
			if !strings.Contains(out, "refusing to install") {
				t.Errorf("the refusal does not say why:\n%s", out)
			}
			if left := tree(t, root); len(left) != 0 {
				t.Errorf("a refused install wrote into the root: %v", keys(left))
			}
		})
	}
}

// An empty ca.crt means the host's system roots (the agent and kubectl itm
// enroll have it so): the script installs such a bundle as it is.
func TestInstallScriptAcceptsABundleWithAnEmptyCaCrt(t *testing.T) {
	dir := artifacts(t)
	root := t.TempDir()
	bundle := []bundleEntry{goodBundle[0], goodBundle[1], {name: "ca.crt", typ: tar.TypeReg}}
	out, err := installScript(t, dir, "--root", root, "--bundle", writeBundle(t, bundle))
	if err != nil {
		t.Fatalf("install-agent.sh refused a bundle with an empty ca.crt: %v\n%s", err, out)
	}
	info, err := os.Lstat(filepath.Join(root, "etc/itmanager-agent/ca.crt"))
	if err != nil || info.Size() != 0 || info.Mode() != 0o600 {
		t.Errorf("ca.crt installed as %v (%v), want an empty -rw------- file", info, err)
	}
}

// Downloads are HTTPS only: checksums.txt comes over the same channel as
// the artifact, so a plain-HTTP base URL is refused before any download.
func TestInstallScriptRefusesAPlainHTTPBaseURL(t *testing.T) {
	dir := artifacts(t)
	cmd := exec.Command("sh", filepath.Join(dir, "install-agent.sh"), "--root", t.TempDir(), "--version", packageVersion, "--base-url", "http://mirror.example/itmanager")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--base-url must be an https:// URL") {
		t.Errorf("a plain-HTTP --base-url: err %v, output:\n%s", err, out)
	}
	if strings.Contains(string(out), "Downloading") {
		t.Errorf("the script downloaded before refusing:\n%s", out)
	}
}

func TestInstallScriptRefusesABundleWithAnythingButUrlTokenAndCaCrt(t *testing.T) {
	dir := artifacts(t)
	with := func(extra ...bundleEntry) []bundleEntry { return append(slices.Clone(goodBundle), extra...) }
	const notExactly, notRegular = "must hold exactly url, token and ca.crt", "not a regular file"
	for name, tc := range map[string]struct {
		entries []bundleEntry
		want    string
	}{
		"an extra file":       {with(bundleEntry{name: "extra", typ: tar.TypeReg, body: "x"}), notExactly},
		"a traversing entry":  {with(bundleEntry{name: "../../etc/cron.d/evil", typ: tar.TypeReg, body: "x"}), notExactly},
		"a traversing url":    {[]bundleEntry{{name: "../url", typ: tar.TypeReg, body: "x"}, goodBundle[1], goodBundle[2]}, notExactly},
		"an absolute path":    {[]bundleEntry{{name: "/tmp/url", typ: tar.TypeReg, body: "x"}, goodBundle[1], goodBundle[2]}, notExactly},
		"a symlinked token":   {[]bundleEntry{goodBundle[0], {name: "token", typ: tar.TypeSymlink, linkname: "/etc/shadow"}, goodBundle[2]}, notRegular},
		"a hard-linked token": {[]bundleEntry{goodBundle[0], {name: "token", typ: tar.TypeLink, linkname: "url"}, goodBundle[2]}, notRegular},
		"a directory":         {with(bundleEntry{name: "sub/", typ: tar.TypeDir}), notExactly},
		"a duplicated token":  {with(goodBundle[1]), notExactly},
		"a missing ca.crt":    {goodBundle[:2], notExactly},
		"an empty token":      {[]bundleEntry{goodBundle[0], {name: "token", typ: tar.TypeReg}, goodBundle[2]}, "token is empty"},
		"an empty url":        {[]bundleEntry{{name: "url", typ: tar.TypeReg}, goodBundle[1], goodBundle[2]}, "url is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			// The script's work directory (where a traversal would land)
			// lives two levels below tmp: after the run tmp is empty.
			tmp := filepath.Join(t.TempDir(), "a", "b")
			if err := os.MkdirAll(tmp, 0o700); err != nil {
				t.Fatal(err)
			}
			out, err := installScriptIn(t, tmp, dir, "--root", root, "--bundle", writeBundle(t, tc.entries))
			if err == nil {
				t.Fatalf("install-agent.sh accepted the bundle:\n%s", out)
			}
			if !strings.Contains(out, "bundle.tar.gz") || !strings.Contains(out, tc.want) {
				t.Errorf("the refusal does not name the bundle and say %q:\n%s", tc.want, out)
			}
			for _, d := range []string{tmp, filepath.Dir(tmp), filepath.Dir(filepath.Dir(tmp))} {
				left, _ := os.ReadDir(d)
				if d == tmp && len(left) != 0 || d != tmp && len(left) != 1 {
					t.Errorf("%s holds %v after a refused bundle (its work directory or an escaped entry)", d, left)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "usr/bin/itmanager-agent")); err == nil {
				t.Error("the agent was installed although its bundle was refused")
			}
			if entries, _ := os.ReadDir(filepath.Join(root, "etc/itmanager-agent")); len(entries) != 0 {
				t.Errorf("a refused bundle left files in the enrolment directory: %v", entries)
			}
			for _, p := range []string{"etc/cron.d/evil", "tmp/url"} {
				if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
					t.Errorf("a refused bundle wrote %s", p)
				}
			}
		})
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := e.Info()
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
