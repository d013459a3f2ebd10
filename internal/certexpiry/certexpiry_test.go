package certexpiry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func certPEM(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCollectorReportsNotAfterOfEachCertificateAndFlagsUnreadableOnes(t *testing.T) {
	notAfter := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	path := filepath.Join(dir, "tls.crt")
	// A key before the certificate, as some bundles have it.
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), certPEM(t, notAfter)...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Collector{Sources: map[string]Source{
		"webhook": File(path),
		"checkin": func() (*x509.Certificate, error) { return nil, errors.New("no Secret") },
		"metrics": File(filepath.Join(dir, "missing.crt")),
	}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP itmanager_certificate_expiry_timestamp_seconds When a serving certificate itmanager uses expires (notAfter of the leaf), as a Unix time, by certificate (webhook, checkin, metrics).
# TYPE itmanager_certificate_expiry_timestamp_seconds gauge
itmanager_certificate_expiry_timestamp_seconds{certificate="webhook"} 1.8039024e+09
# HELP itmanager_certificate_read_errors 1 when the last scrape could not read or parse a certificate (its expiry is then missing), by certificate.
# TYPE itmanager_certificate_read_errors gauge
itmanager_certificate_read_errors{certificate="checkin"} 1
itmanager_certificate_read_errors{certificate="metrics"} 1
itmanager_certificate_read_errors{certificate="webhook"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestLeafRefusesPEMWithoutACertificate(t *testing.T) {
	if _, err := Leaf(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})); err == nil {
		t.Error("Leaf accepted PEM data without a certificate")
	}
}
