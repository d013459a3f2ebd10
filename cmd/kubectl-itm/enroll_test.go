package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

const testToken = "itm_s3cr3t-token-value"

func testCA(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "itmanager-checkin-ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	var fp []string
	for _, b := range sum {
		fp = append(fp, fmt.Sprintf("%02X", b))
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), strings.Join(fp, ":")
}

func enrolledDevice(enabled bool) *itmv1.Device {
	return &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1", UID: "uid-lt-1"},
		Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: enabled}}}
}

func enrolmentSecret(dev *itmv1.Device, ca string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-devices", Name: dev.Name + "-agent",
			Labels:          map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: itmv1.GroupVersion.String(), Kind: "Device", Name: dev.Name, UID: dev.UID, Controller: ptr.To(true)}}},
		Data: map[string][]byte{"url": []byte("https://checkin.example.com/v1/devices/" + dev.Name), "token": []byte(testToken), "ca.crt": []byte(ca)},
	}
}

// untar reads a bundle: entry name to (mode, content), failing on
// anything but a regular file.
func untar(t *testing.T, data []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("bundle is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	got := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o600 {
			t.Errorf("entry %s: type %c mode %o, want a regular 0600 file", hdr.Name, hdr.Typeflag, hdr.Mode)
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name] = string(b)
	}
}

// TestEnrollWritesTheBundleAndNeverPrintsTheToken: the bundle file is
// created 0600 with exactly url, token, ca.crt; the summary names the
// device, URL, CA fingerprint, file and the versioned install command,
// and not the token; an existing file is kept unless --force.
func TestEnrollWritesTheBundleAndNeverPrintsTheToken(t *testing.T) {
	ca, fp := testCA(t)
	dev := enrolledDevice(true)
	objs := []client.Object{dev, enrolmentSecret(dev, ca)}
	file := filepath.Join(t.TempDir(), "lt-1.tar.gz")

	out, errOut, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errOut, testToken) {
		t.Fatalf("the summary prints the token:\n%s%s", out, errOut)
	}
	for _, want := range []string{"Device:", "lt-1", "https://checkin.example.com/v1/devices/lt-1", fp, "Bundle:", file,
		"curl -fsSLO --proto '=https' https://github.com/itmanager-io/itmanager/releases/latest/download/install-agent.sh && sudo sh install-agent.sh --bundle " + filepath.Base(file),
		"development build"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bundle file: %v, mode %v", err, st.Mode())
	}
	data, _ := os.ReadFile(file)
	got := untar(t, data)
	if len(got) != 3 || got["url"] != "https://checkin.example.com/v1/devices/lt-1" || got["token"] != testToken || got["ca.crt"] != ca {
		t.Errorf("bundle entries %v", got)
	}

	// An existing file is kept...
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", file); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrote without --force: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("the existing file changed")
	}
	// ...unless --force, which also makes it 0600.
	if _, _, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", file, "--force"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("--force left mode %v", st.Mode())
	}
	data, _ = os.ReadFile(file)
	if untar(t, data)["token"] != testToken {
		t.Error("--force did not write the bundle")
	}
}

func TestEnrollBundleOnStdoutAndStructuredOutput(t *testing.T) {
	ca, _ := testCA(t)
	dev := enrolledDevice(true)
	objs := []client.Object{dev, enrolmentSecret(dev, ca)}

	// --bundle - to a pipe (not a terminal): the archive on stdout, the
	// summary on stderr.
	out, errOut, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", "-")
	if err != nil {
		t.Fatal(err)
	}
	if got := untar(t, []byte(out)); got["token"] != testToken {
		t.Errorf("stdout bundle %v", got)
	}
	if !strings.Contains(errOut, "written to standard output") || strings.Contains(errOut, testToken) {
		t.Errorf("stderr summary:\n%s", errOut)
	}

	for _, format := range []string{"json", "yaml"} {
		out, _, _, err = plugin(t, objs, "enroll", "lt-1", "-o", format)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"device", "url", "token", "caCrt", testToken, "BEGIN CERTIFICATE"} {
			if !strings.Contains(out, want) {
				t.Errorf("-o %s lacks %q:\n%s", format, want, out)
			}
		}
	}
	var b Bundle
	out, _, _, _ = plugin(t, objs, "enroll", "lt-1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Token != testToken || b.CACrt != ca || b.Device != "lt-1" {
		t.Errorf("-o json: %v %+v", err, b)
	}
}

// TestEnrollRefusals: an agent not enabled names the fix; a missing
// Secret suggests --wait; a Secret that is not this Device's (not
// itmanager's, or an earlier Device's) is never handed out; a forbidden
// read says what permission is missing.
func TestEnrollRefusals(t *testing.T) {
	ca, _ := testCA(t)
	dev := enrolledDevice(true)
	foreign := enrolmentSecret(dev, ca)
	foreign.OwnerReferences[0].UID = "uid-of-an-earlier-lt-1"
	unlabelled := enrolmentSecret(dev, ca)
	unlabelled.Labels = nil
	for name, tt := range map[string]struct {
		objs []client.Object
		want string
	}{
		"agent disabled":  {[]client.Object{enrolledDevice(false)}, `kubectl patch device lt-1 --type=merge -p '{"spec":{"agent":{"enabled":true}}}'`},
		"no agent spec":   {[]client.Object{&itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: "lt-1"}}}, "spec.agent.enabled: true"},
		"no device":       {nil, "get Device lt-1"},
		"no secret yet":   {[]client.Object{dev}, "run with --wait"},
		"an earlier one":  {[]client.Object{dev, foreign}, "is not this Device's enrolment"},
		"not itmanager's": {[]client.Object{dev, unlabelled}, "is not this Device's enrolment"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out, _, _, err := plugin(t, tt.objs, "enroll", "lt-1", "--bundle", filepath.Join(dir, "b"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("a refusal left %v beside the bundle path", left)
			}
			if strings.Contains(out, testToken) || (err != nil && strings.Contains(err.Error(), testToken)) {
				t.Error("a refusal printed the token")
			}
		})
	}

	forbidden := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(dev, enrolmentSecret(dev, ca)).
		WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, fmt.Errorf("RBAC says no"))
			}
			return c.Get(ctx, key, obj, opts...)
		}}).Build()
	_, err := fetchBundle(context.Background(), forbidden, "itmanager-devices", "lt-1", true)
	if err == nil || !strings.Contains(err.Error(), `you may not read the enrolment Secret itmanager-devices/lt-1-agent`) ||
		!strings.Contains(err.Error(), `get on secrets "lt-1-agent" in namespace itmanager-devices`) {
		t.Errorf("forbidden: %v", err)
	}
}

// TestEnrollWaitsForTheOperator: with --wait, a Secret the operator
// writes later is picked up; the positive control without --wait fails.
func TestEnrollWaitsForTheOperator(t *testing.T) {
	ca, _ := testCA(t)
	dev := enrolledDevice(true)
	secret := enrolmentSecret(dev, ca)
	gets := 0
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(dev).
		WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, inner client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				gets++
				if gets == 2 {
					// The operator writes it between the first and second look.
					if err := inner.Create(ctx, secret.DeepCopy()); err != nil {
						return err
					}
				}
			}
			return inner.Get(ctx, key, obj, opts...)
		}}).Build()
	if _, err := fetchBundle(context.Background(), c, "itmanager-devices", "lt-1", false); err == nil {
		t.Fatal("without --wait a missing Secret succeeded")
	}
	gets = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := fetchBundle(ctx, c, "itmanager-devices", "lt-1", true)
	if err != nil || b.Token != testToken || gets != 2 {
		t.Fatalf("--wait: %v %+v after %d reads", err, b, gets)
	}
}

// TestEnrollRefusesATerminalForTheBundle: --bundle - with standard output
// on a terminal writes nothing; the positive control (a pipe) is in
// TestEnrollBundleOnStdoutAndStructuredOutput.
func TestEnrollRefusesATerminalForTheBundle(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("this test needs a pseudo-terminal (/dev/ptmx): %v", err)
	}
	defer func() { _ = ptmx.Close() }()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tty.Close() }()

	ca, _ := testCA(t)
	dev := enrolledDevice(true)
	clients := 0
	var errOut bytes.Buffer
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: genericiooptions.IOStreams{Out: tty, ErrOut: &errOut},
		now: time.Now, local: time.UTC, newClient: func() (client.Client, error) {
			clients++
			return fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(dev, enrolmentSecret(dev, ca)).Build(), nil
		}}
	cmd := newRootCmdWith(o)
	cmd.SetArgs([]string{"enroll", "lt-1", "--bundle", "-"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "standard output, which is a terminal") {
		t.Fatalf("--bundle - to a terminal: %v", err)
	}
	if clients != 0 {
		t.Error("the Secret was read although nothing may be written")
	}
}

func TestInstallCommandNamesThePluginsRelease(t *testing.T) {
	for v, want := range map[string]string{
		"v0.3.1":                  releaseBase + "v0.3.1",
		"0.3.1":                   releaseBase + "v0.3.1",
		"v1.0.0-rc.1":             releaseBase + "v1.0.0-rc.1",
		"dev":                     latestBase,
		"v0.3.1-4-gabc1234":       latestBase,
		"v0.3.1-dirty":            latestBase,
		"0.3.2-SNAPSHOT-abc1234":  latestBase,
		"v0.3.1-4-gabc1234-dirty": latestBase,
	} {
		got, released := installBase(v)
		if got != want || released != (want != latestBase) {
			t.Errorf("installBase(%q) = %q, %v; want %q", v, got, released, want)
		}
	}
	var out bytes.Buffer
	if err := printEnrolment(&out, &Bundle{Device: "lt-1", URL: "https://x", Token: testToken}, "my bundle.tgz", "v0.3.1"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "curl -fsSLO --proto '=https' https://github.com/itmanager-io/itmanager/releases/download/v0.3.1/install-agent.sh && sudo sh install-agent.sh --version v0.3.1 --bundle 'my bundle.tgz'\n") ||
		strings.Contains(out.String(), "development build") || strings.Contains(out.String(), testToken) {
		t.Errorf("release summary:\n%s", out.String())
	}
}

// --force replaces what is at the bundle path and never writes through it:
// a symbolic link there is replaced (its target keeps its content), a hard
// link to the old file never gets the token; without --force a symbolic
// link at the path is refused like a file.
func TestEnrollForceReplacesTheBundlePathNeverWritesThroughIt(t *testing.T) {
	ca, _ := testCA(t)
	dev := enrolledDevice(true)
	objs := []client.Object{dev, enrolmentSecret(dev, ca)}
	dir := t.TempDir()
	target := filepath.Join(dir, "victim")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "lt-1.tar.gz")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", link); err == nil || !strings.Contains(err.Error(), "give --force") {
		t.Errorf("a symbolic link at the path without --force: %v", err)
	}
	hard := filepath.Join(dir, "hard")
	if _, _, _, err := plugin(t, objs, "enroll", "lt-1", "--bundle", link, "--force"); err != nil {
		t.Fatal(err)
	}
	if body, _ := os.ReadFile(target); string(body) != "keep me" {
		t.Errorf("--force wrote through the symbolic link into its target: %q", body)
	}
	info, err := os.Lstat(link)
	if err != nil || info.Mode().Type() != 0 || info.Mode().Perm() != 0o600 {
		t.Fatalf("the bundle path is %v (%v), want a regular 0600 file", info, err)
	}
	if err := os.Link(link, hard); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(hard)
	// A rotated token: a write through the old file would change it.
	rotated := enrolmentSecret(dev, ca)
	rotated.Data["token"] = []byte("a-rotated-token")
	if _, _, _, err := plugin(t, []client.Object{dev, rotated}, "enroll", "lt-1", "--bundle", link, "--force"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(hard); !bytes.Equal(before, after) {
		t.Error("--force wrote into the old file (a hard link to it changed)")
	}
	if now, _ := os.ReadFile(link); bytes.Equal(before, now) {
		t.Error("--force did not replace the bundle with the rotated token's")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".itm-bundle-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
