package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/version"
)

// releaseBase is where the release artifacts of one version are
// downloaded from; latestBase is the newest release's.
const (
	releaseBase = "https://github.com/itmanager-io/itmanager/releases/download/"
	latestBase  = "https://github.com/itmanager-io/itmanager/releases/latest/download"
)

// releaseVersion matches a released version (v1.2.3, 1.2.3-rc.1); a
// development build (dev, git describe's v1.2.3-4-gabc1234, -dirty, a
// snapshot) has no release of its own.
var releaseVersion = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+(-(alpha|beta|rc)(\.?[0-9]+)*)?$`)

// Bundle is what `kubectl itm enroll -o json|yaml` prints: the enrolment
// Secret's url, token and ca.crt, as the agent's --enrolment-dir reads
// them. It holds the device's credential: treat it as a Secret.
type Bundle struct {
	Device string `json:"device"`
	URL    string `json:"url"`
	Token  string `json:"token"`
	// CACrt is the PEM bundle the agent verifies the check-in service
	// with (empty: the system roots).
	CACrt string `json:"caCrt"`
}

type enrollOptions struct {
	bundle  string
	force   bool
	wait    bool
	timeout time.Duration
	output  string
}

func newEnrollCmd(o *options) *cobra.Command {
	eo := &enrollOptions{}
	cmd := &cobra.Command{
		Use:   "enroll DEVICE",
		Short: "Fetch a Device's agent enrolment bundle and print the install command",
		Long: `Fetch the enrolment of a Device's agent: the Secret <device>-agent (url,
token, ca.crt) that the operator writes in --devices-namespace for every
Device with spec.agent.enabled. You read it with your own credentials: the
API server's RBAC decides whether you may (get on that Secret).

With --bundle FILE it writes the enrolment bundle, a gzipped tar of url,
token and ca.crt (modes 0600), to FILE (created 0600; an existing file is
kept unless --force), and prints the device, check-in URL, CA fingerprint
and the one-line command that installs the agent on the host and enrols it
with the bundle. The token is never printed in this summary.`,
		Example: `  # enable the agent, wait for the enrolment and write the bundle
  kubectl patch device lt-pf3x8k2q --type=merge -p '{"spec":{"agent":{"enabled":true}}}'
  kubectl itm enroll lt-pf3x8k2q --wait --bundle lt-pf3x8k2q.tar.gz
  scp lt-pf3x8k2q.tar.gz lt-pf3x8k2q:

  # the bundle on stdout (never to a terminal)
  kubectl itm enroll lt-pf3x8k2q --bundle - | ssh lt-pf3x8k2q 'cat > bundle.tar.gz'

  # the fields for automation
  kubectl itm enroll lt-pf3x8k2q -o json | jq -r .url`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeNames(o, &itmv1.DeviceList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eo.run(cmd, o, args[0])
		},
	}
	cmd.Flags().StringVar(&eo.bundle, "bundle", "", `write the enrolment bundle (gzipped tar) to this file ("-": standard output, never a terminal)`)
	cmd.Flags().BoolVar(&eo.force, "force", false, "overwrite the --bundle file if it exists")
	cmd.Flags().BoolVar(&eo.wait, "wait", false, "wait until the operator has written the enrolment Secret")
	cmd.Flags().DurationVar(&eo.timeout, "timeout", 2*time.Minute, "how long --wait waits")
	addOutputFlag(cmd, &eo.output, outputTable, outputJSON, outputYAML)
	return cmd
}

func (eo *enrollOptions) run(cmd *cobra.Command, o *options, name string) error {
	out := o.streams.Out
	if eo.bundle == "-" {
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return errors.New("--bundle - writes a binary archive holding the device's token to standard output, which is a terminal: redirect it to a file or a pipe, or give --bundle FILE")
		}
		if eo.output != outputTable {
			return errors.New("--bundle - and -o " + eo.output + " both write to standard output: give --bundle FILE")
		}
		// The archive has standard output; the summary goes to stderr.
		out = o.streams.ErrOut
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	timeout := requestTimeout
	if eo.wait {
		timeout = eo.timeout
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	b, err := fetchBundle(ctx, c, o.devicesNS, name, eo.wait)
	if err != nil {
		return err
	}
	archive, err := bundleArchive(b)
	if err != nil {
		return err
	}
	file := eo.bundle
	switch file {
	case "":
	case "-":
		if _, err := o.streams.Out.Write(archive); err != nil {
			return err
		}
	default:
		if err := writeBundle(file, archive, eo.force); err != nil {
			return err
		}
	}
	if eo.output != outputTable {
		return printStructured(out, eo.output, b)
	}
	return printEnrolment(out, b, file, version.Version)
}

// fetchBundle reads the Device and its enrolment Secret; with wait it
// polls (get only: a user who may read the Secret need not watch it)
// until the operator has written it.
func fetchBundle(ctx context.Context, c client.Client, devicesNS, name string, waitFor bool) (*Bundle, error) {
	dev := &itmv1.Device{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, dev); err != nil {
		return nil, fmt.Errorf("get Device %s: %w", name, err)
	}
	if dev.Spec.Agent == nil || !dev.Spec.Agent.Enabled {
		return nil, fmt.Errorf("device %s does not have spec.agent.enabled: true, so the operator issues it no enrolment; enable it with\n"+
			"  kubectl patch device %s --type=merge -p '{\"spec\":{\"agent\":{\"enabled\":true}}}'\n"+
			"and run this again with --wait", name, name)
	}
	key := types.NamespacedName{Namespace: devicesNS, Name: name + "-agent"}
	var b *Bundle
	var last error
	get := func(ctx context.Context) (bool, error) {
		s := &corev1.Secret{}
		err := c.Get(ctx, key, s)
		switch {
		case apierrors.IsForbidden(err):
			return false, fmt.Errorf("you may not read the enrolment Secret %s: the bundle is a credential, and reading it needs get on secrets %q in namespace %s "+
				"(ask for a Role granting it, or use --as with a user who has it; a wrong --devices-namespace also ends here): %w", key, key.Name, key.Namespace, err)
		case apierrors.IsNotFound(err):
			last = fmt.Errorf("the operator has not written the enrolment Secret %s yet (is the manager running with --devices-namespace=%s?)", key, devicesNS)
			return false, nil
		case err != nil:
			return false, fmt.Errorf("get Secret %s: %w", key, err)
		}
		if s.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue || !metav1.IsControlledBy(s, dev) {
			// Left from an earlier Device of the same name, or not
			// itmanager's: its token does not enrol this device.
			last = fmt.Errorf("secret %s is not this Device's enrolment (not written by itmanager for Device %s, uid %s)", key, name, dev.UID)
			return false, nil
		}
		if len(s.Data[checkin.SecretKeyURL]) == 0 || len(s.Data[checkin.SecretKeyToken]) == 0 {
			last = fmt.Errorf("secret %s has no %s or %s yet", key, checkin.SecretKeyURL, checkin.SecretKeyToken)
			return false, nil
		}
		b = &Bundle{Device: name, URL: string(s.Data[checkin.SecretKeyURL]), Token: string(s.Data[checkin.SecretKeyToken]), CACrt: string(s.Data[checkin.SecretKeyCA])}
		return true, nil
	}
	if !waitFor {
		done, err := get(ctx)
		switch {
		case err != nil:
			return nil, err
		case !done:
			return nil, fmt.Errorf("%w; run with --wait to wait for it", last)
		}
		return b, nil
	}
	if err := wait.PollUntilContextCancel(ctx, time.Second, true, get); err != nil {
		if last != nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("gave up waiting: %w", last)
		}
		return nil, err
	}
	return b, nil
}

// bundleArchive is the enrolment bundle: a gzipped tar of exactly url,
// token and ca.crt, each 0600, no directories (what install-agent.sh
// --bundle unpacks into /etc/itmanager-agent).
func bundleArchive(b *Bundle) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []struct{ name, data string }{
		{checkin.SecretKeyURL, b.URL}, {checkin.SecretKeyToken, b.Token}, {checkin.SecretKeyCA, b.CACrt},
	} {
		hdr := &tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeBundle writes the archive to path as a new 0600 file. Without force
// the path must not exist (O_EXCL: a symbolic link there is not followed)
// and a failed write removes what it made. With force the archive is
// written complete into a temporary file beside path and renamed over it,
// so an existing path is replaced, never written through: a symbolic link
// there is replaced rather than followed, and a hard link or an open
// descriptor of the old file never receives the token.
func writeBundle(path string, archive []byte, force bool) (err error) {
	var f *os.File
	if force {
		f, err = os.CreateTemp(filepath.Dir(path), ".itm-bundle-*")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: give --force to overwrite it", path)
		}
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// Whatever the umask or platform.
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(archive); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(f.Name(), path)
	}
	return nil
}

// caFingerprints are the SHA-256 fingerprints of the certificates in a
// PEM bundle, as `openssl x509 -fingerprint -sha256` prints them.
func caFingerprints(pemData string) []string {
	var fps []string
	rest := []byte(pemData)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return fps
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			continue
		}
		sum := sha256.Sum256(block.Bytes)
		hexes := make([]string, len(sum))
		for i, x := range sum {
			hexes[i] = fmt.Sprintf("%02X", x)
		}
		fps = append(fps, strings.Join(hexes, ":"))
	}
}

// installBase is the release download URL of the plugin's own version,
// and whether it is one (a development build gets the latest release's).
func installBase(v string) (string, bool) {
	if !releaseVersion.MatchString(v) {
		return latestBase, false
	}
	return releaseBase + "v" + strings.TrimPrefix(v, "v"), true
}

// printEnrolment prints the summary: never the token.
func printEnrolment(out io.Writer, b *Bundle, file, pluginVersion string) error {
	tw := newDescribe(out)
	fmt.Fprintf(tw, "Device:\t%s\n", b.Device)
	fmt.Fprintf(tw, "Check-in URL:\t%s\n", b.URL)
	fps := caFingerprints(b.CACrt)
	switch {
	case len(fps) > 0:
		for _, fp := range fps {
			fmt.Fprintf(tw, "CA fingerprint (SHA-256):\t%s\n", fp)
		}
	case b.CACrt == "":
		fmt.Fprintf(tw, "CA fingerprint (SHA-256):\t<none> (the agent verifies with the host's system roots)\n")
	default:
		fmt.Fprintf(tw, "CA fingerprint (SHA-256):\t<none> (ca.crt holds no certificate)\n")
	}
	target := file
	switch file {
	case "":
		fmt.Fprintf(tw, "Bundle:\tnot written (give --bundle FILE)\n")
		target = b.Device + ".tar.gz"
	case "-":
		fmt.Fprintf(tw, "Bundle:\twritten to standard output\n")
		target = "BUNDLE_FILE"
	default:
		fmt.Fprintf(tw, "Bundle:\t%s (mode 0600; it holds the device's token: copy it to the host, then delete it)\n", file)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	base, released := installBase(pluginVersion)
	fmt.Fprintf(out, "\nOn the host, with the bundle in the current directory, install and enrol the agent:\n\n")
	// A released plugin pins the agent to its own version: the script
	// alone would install the latest release.
	pin := ""
	if released {
		pin = " --version v" + strings.TrimPrefix(pluginVersion, "v")
	}
	fmt.Fprintf(out, "  curl -fsSLO --proto '=https' %s/install-agent.sh && sudo sh install-agent.sh%s --bundle %s\n", base, pin, shellQuote(filepath.Base(target)))
	if !released {
		fmt.Fprintf(out, "\nThis plugin is a development build (%s): the command installs the latest release, not a matching one.\n", pluginVersion)
	}
	return nil
}

// shellQuote quotes s for sh when it holds anything but safe characters.
func shellQuote(s string) string {
	if regexp.MustCompile(`^[A-Za-z0-9._/+:@=-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
