package webhookcert

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// TestWriteFilesSwapsThePairAtOnce: the files are links into one data
// directory that is replaced as a whole, so a reader never pairs a new
// certificate with an old key; the same content is not written again, and
// the previous directory is gone.
func TestWriteFilesSwapsThePairAtOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	read := func(name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	for i, c := range []struct {
		crt, key string
		wrote    bool
	}{{"crt1", "key1", true}, {"crt1", "key1", false}, {"crt2", "key2", true}} {
		wrote, err := writeFiles(dir, map[string][]byte{"tls.crt": []byte(c.crt), "tls.key": []byte(c.key)})
		if err != nil {
			t.Fatal(err)
		}
		if wrote != c.wrote || read("tls.crt") != c.crt || read("tls.key") != c.key {
			t.Fatalf("write %d: wrote %v, files %q %q; want %v, %q %q", i, wrote, read("tls.crt"), read("tls.key"), c.wrote, c.crt, c.key)
		}
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != filepath.Join(dataLink, name) {
			t.Errorf("%s links to %q (%v), want into %s", name, target, err, dataLink)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(dir, "..certs-*"))
	if len(dirs) != 1 {
		t.Errorf("data directories left: %v", dirs)
	}
	if info, err := os.Stat(filepath.Join(dir, "tls.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the key is readable by others: %v %v", info.Mode(), err)
	}
}

type fakeServer struct {
	webhook.Server
	started chan struct{}
}

func (f *fakeServer) Start(ctx context.Context) error { close(f.started); <-ctx.Done(); return nil }
func (f *fakeServer) StartedChecker() healthz.Checker {
	return func(*http.Request) error { return nil }
}

// TestServerWaitsForTheCertificate: the webhook server neither starts nor
// reports ready before the certificate is written, starts once it is, and
// a manager stopping before then stops it cleanly.
func TestServerWaitsForTheCertificate(t *testing.T) {
	c := New(Options{})
	inner := &fakeServer{started: make(chan struct{})}
	s := c.Server(inner)
	if err := s.StartedChecker()(nil); !errors.Is(err, errNoCertificate) {
		t.Fatalf("ready before the certificate: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	select {
	case <-inner.started:
		t.Fatal("the server started before the certificate")
	case <-time.After(100 * time.Millisecond):
	}
	c.markReady()
	<-inner.started
	if err := s.StartedChecker()(nil); err != nil {
		t.Errorf("not ready with the certificate: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}

	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(Options{}).Server(&fakeServer{started: make(chan struct{})}).Start(stopped); err != nil {
		t.Errorf("a stop before the certificate: %v", err)
	}
	if got, ok := CertsOf(s); !ok || got != c {
		t.Error("CertsOf does not find the Certs of its server")
	}
}
