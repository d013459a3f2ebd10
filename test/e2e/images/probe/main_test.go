package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func probe(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	t.Logf("probe %v: exit %d\nstdout: %s\nstderr: %s", args, code, stdout.String(), stderr.String())
	return code, stdout.String()
}

// statusServer answers each path with the status it names (/200, /403, ...).
func statusServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/403":
			w.WriteHeader(http.StatusForbidden)
		case "/500":
			w.WriteHeader(http.StatusInternalServerError)
		case "/302":
			http.Redirect(w, r, "/200", http.StatusFound)
		}
		_, _ = w.Write([]byte("body"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestGetExitCodes(t *testing.T) {
	srv := statusServer(t)
	for name, c := range map[string]struct {
		args []string
		want int
	}{
		"200 succeeds":                           {[]string{"get", srv.URL + "/200"}, exitOK},
		"403 fails":                              {[]string{"get", srv.URL + "/403"}, exitFailed},
		"403 expected succeeds":                  {[]string{"get", srv.URL + "/403", "--expect", "403"}, exitOK},
		"200 when 403 expected fails":            {[]string{"get", "--expect=403", srv.URL + "/200"}, exitFailed},
		"500 fails":                              {[]string{"get", srv.URL + "/500"}, exitFailed},
		"a redirect is reported, not followed":   {[]string{"get", srv.URL + "/302"}, exitFailed},
		"refused connection fails":               {[]string{"get", "http://" + closedAddr(t) + "/"}, exitFailed},
		"no URL is a usage error":                {[]string{"get"}, exitUsage},
		"two URLs are a usage error":             {[]string{"get", srv.URL, srv.URL}, exitUsage},
		"an unknown flag is a usage error":       {[]string{"get", srv.URL, "--nope"}, exitUsage},
		"an unknown command is a usage error":    {[]string{"fetch", srv.URL}, exitUsage},
		"no command at all is a usage error":     {nil, exitUsage},
		"flags after the argument are respected": {[]string{"get", srv.URL + "/403", "--timeout", "1s", "--expect", "403"}, exitOK},
	} {
		t.Run(name, func(t *testing.T) {
			if code, _ := probe(t, c.args...); code != c.want {
				t.Errorf("exit code %d, want %d", code, c.want)
			}
		})
	}
}

func TestGetPrintsTheStatusThenTheBody(t *testing.T) {
	srv := statusServer(t)
	if _, out := probe(t, "get", srv.URL+"/403"); out != "403\nbody" {
		t.Errorf("stdout %q, want %q", out, "403\nbody")
	}
}

func TestDialExitCodes(t *testing.T) {
	srv := statusServer(t)
	if code, _ := probe(t, "dial", srv.Listener.Addr().String(), "--timeout", "2s"); code != exitOK {
		t.Errorf("dial to a listener: exit %d, want 0", code)
	}
	if code, _ := probe(t, "dial", closedAddr(t)); code != exitFailed {
		t.Errorf("dial to a closed port: exit %d, want 1", code)
	}
	if code, _ := probe(t, "dial"); code != exitUsage {
		t.Errorf("dial without an address: exit %d, want 2", code)
	}
}

func TestServeAnswersOkAndItsHostname(t *testing.T) {
	srv := httptest.NewServer(handler("pod-1"))
	defer srv.Close()
	code, out := probe(t, "get", srv.URL+"/anything")
	if code != exitOK || out != "200\nok pod-1\n" {
		t.Errorf("exit %d, stdout %q; want 0 and %q", code, out, "200\nok pod-1\n")
	}
}

func TestServeStopsWithExit0WhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	if code := serve(ctx, []string{"127.0.0.1:0", "127.0.0.1:0"}, &stderr); code != exitOK {
		t.Errorf("exit %d, want 0: %s", code, stderr.String())
	}
	if n := strings.Count(stderr.String(), "listening on"); n != 2 {
		t.Errorf("listened on %d addresses, want 2: %s", n, stderr.String())
	}
}

func TestServeFailsOnAnAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	var stderr bytes.Buffer
	if code := serve(context.Background(), []string{ln.Addr().String()}, &stderr); code != exitFailed {
		t.Errorf("exit %d, want 1", code)
	}
}

// apiServer is a TLS server that answers 200 to "Bearer good" on
// /api/v1/namespaces/x/pods, 403 to any other token, 401 without one.
func apiServer(t *testing.T) (*httptest.Server, []byte) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch auth := r.Header.Get("Authorization"); {
		case auth == "":
			w.WriteHeader(http.StatusUnauthorized)
		case auth != "Bearer good":
			w.WriteHeader(http.StatusForbidden)
		case r.URL.Path != "/api/v1/namespaces/x/pods":
			w.WriteHeader(http.StatusNotFound)
		default:
			_, _ = w.Write([]byte(`{"kind":"PodList","items":[]}`))
		}
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, ca
}

// writeKubeconfig writes a kubeconfig as the Kubernetes AccountProvider
// issues them (clientcmd.Write of one cluster, user and context).
func writeKubeconfig(t *testing.T, server string, ca []byte, user string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("good\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caData := "certificate-authority-data: " + b64(ca)
	users := map[string]string{
		"inline":    "token: good",
		"file":      "tokenFile: token",
		"wrong":     "token: bad",
		"anonymous": "{}",
	}
	if user == "ca-file" {
		caData, user = "certificate-authority: ca.crt", "inline"
	}
	kc := `apiVersion: v1
kind: Config
clusters:
- cluster:
    ` + caData + `
    server: ` + server + `
  name: itmanager
contexts:
- context:
    cluster: itmanager
    namespace: x
    user: alice
  name: alice
current-context: alice
users:
- name: alice
  user:
    ` + users[user] + `
`
	file := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(file, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestKubeapiUsesTheKubeconfigsCAAndToken(t *testing.T) {
	srv, ca := apiServer(t)
	otherCA := selfSignedCA(t) // httptest's TLS servers all share one certificate
	const path = "/api/v1/namespaces/x/pods"
	for name, c := range map[string]struct {
		kubeconfig string
		args       []string
		want       int
		stdout     string
	}{
		"inline token: 200":                        {writeKubeconfig(t, srv.URL, ca, "inline"), nil, exitOK, "200\n{\"kind\":\"PodList\",\"items\":[]}"},
		"token file next to the kubeconfig: 200":   {writeKubeconfig(t, srv.URL, ca, "file"), nil, exitOK, "200\n"},
		"CA file next to the kubeconfig: 200":      {writeKubeconfig(t, srv.URL, ca, "ca-file"), nil, exitOK, "200\n"},
		"a wrong token: 403, failure":              {writeKubeconfig(t, srv.URL, ca, "wrong"), nil, exitFailed, "403\n"},
		"a wrong token, 403 expected: success":     {writeKubeconfig(t, srv.URL, ca, "wrong"), []string{"--expect", "403"}, exitOK, "403\n"},
		"no credentials: 401":                      {writeKubeconfig(t, srv.URL, ca, "anonymous"), nil, exitFailed, "401\n"},
		"another CA: TLS refused, nothing printed": {writeKubeconfig(t, srv.URL, otherCA, "inline"), nil, exitFailed, ""},
		"--server overrides the kubeconfig's":      {writeKubeconfig(t, "https://"+closedAddr(t), ca, "inline"), []string{"--server", srv.URL}, exitOK, "200\n"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"kubeapi", "--kubeconfig", c.kubeconfig, "--path", path}, c.args...)
			code, out := probe(t, args...)
			if code != c.want {
				t.Errorf("exit code %d, want %d", code, c.want)
			}
			if !strings.HasPrefix(out, c.stdout) || (c.stdout == "" && out != "") {
				t.Errorf("stdout %q, want it to start with %q", out, c.stdout)
			}
		})
	}
}

func TestKubeapiUsage(t *testing.T) {
	srv, ca := apiServer(t)
	kc := writeKubeconfig(t, srv.URL, ca, "inline")
	for name, args := range map[string][]string{
		"no kubeconfig":           {"kubeapi", "--path", "/api"},
		"a relative path":         {"kubeapi", "--kubeconfig", kc, "--path", "api"},
		"a missing kubeconfig":    {"kubeapi", "--kubeconfig", kc + ".missing", "--path", "/api"},
		"an unexpected argument":  {"kubeapi", "--kubeconfig", kc, "extra"},
		"a kubeconfig not a YAML": {"kubeapi", "--kubeconfig", writeFile(t, "{{"), "--path", "/api"},
	} {
		t.Run(name, func(t *testing.T) {
			if code, _ := probe(t, args...); code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func b64(data []byte) string { return base64.StdEncoding.EncodeToString(data) }

// selfSignedCA is a CA certificate (PEM) no test server uses.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
