package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPServer is a real OpenLDAP slapd on 127.0.0.1, configured in a temp
// dir: suffix BaseDN, an admin (the rootdn), ou=people and ou=groups, and the
// ppolicy overlay with a default policy, so pwdAccountLockedTime locks an
// account as in a production directory.
type LDAPServer struct {
	URL           string
	BaseDN        string
	AdminDN       string
	AdminPassword string
	// PeopleDN and GroupsDN are the two organizational units under BaseDN.
	PeopleDN, GroupsDN string
	// With LDAPOptions.TLS: LDAPSURL serves ldaps://, URL also offers
	// StartTLS, and CAPEM is the CA that signed their certificate (for
	// 127.0.0.1).
	LDAPSURL string
	CAPEM    []byte

	cmd *exec.Cmd
	// exited is closed when slapd ends; exitErr is how.
	exited  chan struct{}
	exitErr error
	dir     string
	log     *os.File
	// bin, confPath and listen start slapd again after Halt.
	bin, confPath, listen string
}

// slapdPath finds slapd, which Debian installs outside a user's PATH.
func slapdPath() (string, error) {
	if p, err := exec.LookPath("slapd"); err == nil {
		return p, nil
	}
	if fi, err := os.Stat("/usr/sbin/slapd"); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return "/usr/sbin/slapd", nil
	}
	return "", errors.New("slapd not found")
}

// findSLAPD finds slapd or says how to install it. Tests never install
// packages themselves: make test (and make bench) run hack/install-slapd.sh
// first.
func findSLAPD() (string, error) {
	if err := refuseInUnitRun("OpenLDAP's slapd"); err != nil {
		return "", err
	}
	p, err := slapdPath()
	if err != nil {
		return "", fmt.Errorf("%w: this test needs OpenLDAP's slapd; install it with hack/install-slapd.sh (as root; make test runs it) or apt-get install slapd", err)
	}
	return p, nil
}

// LDAPOptions configure StartLDAP.
type LDAPOptions struct {
	// LogDir, when set, keeps slapd's log there.
	LogDir string
	// TLS serves ldaps:// too and offers StartTLS, with a certificate for
	// 127.0.0.1 from a CA made for the run.
	TLS bool
}

// StartLDAP starts slapd on a free loopback port; Stop ends it and removes
// its files, Halt ends it and keeps them for Restart.
func StartLDAP(opts LDAPOptions) (*LDAPServer, error) {
	bin, err := findSLAPD()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "itmanager-slapd-")
	if err != nil {
		return nil, err
	}
	s := &LDAPServer{dir: dir, BaseDN: "dc=itmanager,dc=test"}
	s.AdminDN = "cn=admin," + s.BaseDN
	s.PeopleDN = "ou=people," + s.BaseDN
	s.GroupsDN = "ou=groups," + s.BaseDN
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	s.AdminPassword = hex.EncodeToString(pw)
	if err := s.start(bin, opts); err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.seed(); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *LDAPServer) start(bin string, opts LDAPOptions) error {
	db := filepath.Join(s.dir, "db")
	if err := os.Mkdir(db, 0o700); err != nil {
		return err
	}
	var tlsConf []string
	if opts.TLS {
		files, ca, err := writeServingCert(s.dir)
		if err != nil {
			return err
		}
		s.CAPEM = ca
		tlsConf = []string{"TLSCACertificateFile " + files[0], "TLSCertificateFile " + files[1], "TLSCertificateKeyFile " + files[2]}
	}
	// slapd.conf takes the root password in clear text too; it never
	// leaves the temp dir.
	conf := strings.Join([]string{
		"include /etc/ldap/schema/core.schema",
		"include /etc/ldap/schema/cosine.schema",
		"include /etc/ldap/schema/inetorgperson.schema",
		"include /etc/ldap/schema/nis.schema",
		"modulepath /usr/lib/ldap",
		"moduleload back_mdb",
		"moduleload ppolicy",
		"pidfile " + filepath.Join(s.dir, "slapd.pid"),
		"database mdb",
		"maxsize 104857600",
		fmt.Sprintf("suffix %q", s.BaseDN),
		fmt.Sprintf("rootdn %q", s.AdminDN),
		"rootpw " + s.AdminPassword,
		"directory " + db,
		"overlay ppolicy",
		fmt.Sprintf("ppolicy_default %q", "cn=default,"+s.BaseDN),
	}, "\n") + "\n" + strings.Join(tlsConf, "\n") + "\n"
	confPath := filepath.Join(s.dir, "slapd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "slapd.log")
	if opts.LogDir != "" {
		logPath = filepath.Join(opts.LogDir, "slapd.log")
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.log, s.bin, s.confPath = log, bin, confPath
	var lastErr error
	for range 5 { // a free port can be taken before slapd binds it
		ports, err := FreePorts(2)
		if err != nil {
			return err
		}
		s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", ports[0])
		s.listen = s.URL + "/"
		if opts.TLS {
			s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", ports[1])
			s.listen += " " + s.LDAPSURL + "/"
		}
		lastErr = s.launch()
		if !errors.Is(lastErr, errSlapdExited) {
			return lastErr
		}
	}
	return lastErr
}

// errSlapdExited: slapd ended before it answered (a port taken, most often).
var errSlapdExited = errors.New("slapd exited")

// launch runs slapd on s.listen with s's configuration and data, and returns
// once it answers on URL.
func (s *LDAPServer) launch() error {
	cmd := exec.Command(s.bin, "-f", s.confPath, "-h", s.listen, "-d", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	go func() { s.exitErr = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("%w: %w (log %s)", errSlapdExited, s.exitErr, s.log.Name())
		default:
		}
		if c, err := ldap.DialURL(s.URL); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("slapd did not answer on %s within 15s (log %s)", s.URL, s.log.Name())
}

// kill ends slapd (SIGTERM, SIGKILL after 5 s) and waits for it.
func (s *LDAPServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Halt stops slapd, as an outage of the directory would, and keeps its data
// and configuration: nothing listens on URL until Restart.
func (s *LDAPServer) Halt() error {
	if s.cmd == nil {
		return errors.New("slapd is not running")
	}
	s.kill()
	if c, err := ldap.DialURL(s.URL); err == nil {
		_ = c.Close()
		return fmt.Errorf("%s still answers after slapd stopped", s.URL)
	}
	return nil
}

// Restart starts slapd again after Halt, on the same URL with the same data,
// and returns once it answers.
func (s *LDAPServer) Restart() error {
	if s.cmd != nil {
		return errors.New("slapd is running")
	}
	return s.launch()
}

// Running reports whether slapd runs (it was not halted, or was restarted).
func (s *LDAPServer) Running() bool { return s.cmd != nil }

// Admin is a connection bound as the rootdn; the caller closes it.
func (s *LDAPServer) Admin() (*ldap.Conn, error) {
	c, err := ldap.DialURL(s.URL)
	if err != nil {
		return nil, err
	}
	if err := c.Bind(s.AdminDN, s.AdminPassword); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (s *LDAPServer) seed() error {
	c, err := s.Admin()
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	adds := []*ldap.AddRequest{
		addRequest(s.BaseDN, map[string][]string{"objectClass": {"dcObject", "organization"}, "o": {"itmanager test"}, "dc": {"itmanager"}}),
		addRequest(s.PeopleDN, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}}),
		addRequest(s.GroupsDN, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"groups"}}),
		addRequest("cn=default,"+s.BaseDN, map[string][]string{"objectClass": {"applicationProcess", "pwdPolicy"}, "cn": {"default"},
			"pwdAttribute": {"userPassword"}, "pwdLockout": {"TRUE"}}),
	}
	for _, a := range adds {
		if err := c.Add(a); err != nil {
			return fmt.Errorf("seed %s: %w", a.DN, err)
		}
	}
	return nil
}

func addRequest(dn string, attrs map[string][]string) *ldap.AddRequest {
	a := ldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		a.Attribute(k, v)
	}
	return a
}

// Stop ends slapd and removes its files.
func (s *LDAPServer) Stop() error {
	s.kill()
	if s.log != nil {
		_ = s.log.Close()
	}
	return os.RemoveAll(s.dir)
}

// writeServingCert writes a CA, and a certificate and key for 127.0.0.1
// signed by it, into dir: it returns the three file names and the CA PEM.
func writeServingCert(dir string) ([3]string, []byte, error) {
	var files [3]string
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return files, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "itmanager test LDAP CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return files, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return files, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return files, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	contents := [3][]byte{
		caPEM,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
	for i, name := range []string{"ca.crt", "tls.crt", "tls.key"} {
		files[i] = filepath.Join(dir, name)
		if err := os.WriteFile(files[i], contents[i], 0o600); err != nil {
			return files, nil, err
		}
	}
	return files, caPEM, nil
}
