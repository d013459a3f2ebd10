package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEtcdListensWithTLSAndRequiresClientCertificatesOfTheEtcdCA(t *testing.T) {
	cfg := defaultConfig("/lab")
	args := strings.Join(cfg.etcdArgs(), " ")
	for _, want := range []string{
		"--listen-client-urls=https://127.0.0.1:", "--listen-peer-urls=https://127.0.0.1:",
		"--client-cert-auth=true", "--trusted-ca-file=/lab/pki/etcd-ca.crt",
		"--cert-file=/lab/pki/etcd-server.crt", "--key-file=/lab/pki/etcd-server.key",
		"--peer-client-cert-auth=true", "--peer-trusted-ca-file=/lab/pki/etcd-ca.crt",
		"--listen-metrics-urls= ",
	} {
		if !strings.Contains(args+" ", want) {
			t.Errorf("etcd args lack %s", want)
		}
	}
	if strings.Contains(args, "http://") {
		t.Errorf("etcd listens without TLS: %s", args)
	}
	api := strings.Join(cfg.apiserverArgs(), " ")
	for _, want := range []string{
		"--etcd-servers=https://127.0.0.1:", "--etcd-cafile=/lab/pki/etcd-ca.crt",
		"--etcd-certfile=/lab/pki/apiserver-etcd-client.crt", "--etcd-keyfile=/lab/pki/apiserver-etcd-client.key",
	} {
		if !strings.Contains(api, want) {
			t.Errorf("apiserver args lack %s", want)
		}
	}
}

// etcdLike serves as etcd does with the rendered flags: the etcd-server
// certificate, and a client certificate verified against etcd-ca.crt.
func etcdLike(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(cfg.pki("etcd-server.crt"), cfg.pki("etcd-server.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cfg.pki("etcd-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"health":"true"}`))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestEtcdHealthWaitUsesTLSAndOnlyEtcdCAClientsGetIn(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig(dir)
	if err := writePKI(cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "etcd-ca.key")); err == nil {
		t.Error("the etcd CA's key is on disk: anyone who reads it can mint etcd clients")
	}
	srv := etcdLike(t, cfg)
	// The server's certificate must verify for 127.0.0.1, where etcd
	// listens (httptest listens there too).
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("test server at %s", srv.URL)
	}
	c, err := etcdClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL + "/health")
	if err != nil {
		t.Fatalf("the apiserver's etcd client is refused: %v", err)
	}
	resp.Body.Close()

	// The cluster admin (cluster CA, system:masters) is not an etcd client.
	admin, err := tls.LoadX509KeyPair(cfg.pki("admin.crt"), cfg.pki("admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{admin}
	if resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/health"); err == nil {
		resp.Body.Close()
		t.Error("a client certificate of the cluster CA reached etcd")
	}
	// Nor is a client without a certificate.
	tr = c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = nil
	if resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/health"); err == nil {
		resp.Body.Close()
		t.Error("a client without a certificate reached etcd")
	}
}
