package checkin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Keys of the serving-certificate Secret.
const (
	keyCACert  = "ca.crt"
	keyCAKey   = "ca.key"
	keyTLSCert = corev1.TLSCertKey
	keyTLSKey  = corev1.TLSPrivateKeyKey
)

// Lifetimes of the self-signed certificates. The serving certificate is
// reissued once two thirds of its life have passed, so a replica that reads
// the Secret late still serves a valid one.
const (
	caLifetime      = 10 * 365 * 24 * time.Hour
	servingLifetime = 365 * 24 * time.Hour
)

// Rotation decides whether the self-signed material in data must be
// (re)issued for hosts at now, and why.
func Rotation(data map[string][]byte, hosts []string, now time.Time) (caNeeded, servingNeeded bool, reason string) {
	ca, err := parseCert(data[keyCACert])
	if err != nil || len(data[keyCAKey]) == 0 || now.After(ca.NotAfter.Add(-servingLifetime)) {
		return true, true, "no usable CA"
	}
	cert, err := parseCert(data[keyTLSCert])
	if err != nil || len(data[keyTLSKey]) == 0 {
		return false, true, "no serving certificate"
	}
	if cert.CheckSignatureFrom(ca) != nil {
		return false, true, "serving certificate not signed by the CA"
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	if now.After(cert.NotBefore.Add(life * 2 / 3)) {
		return false, true, "serving certificate is two thirds through its life"
	}
	if !slices.Equal(sortedSANs(cert), sortedHosts(hosts)) {
		return false, true, "serving certificate names other hosts"
	}
	return false, false, ""
}

func parseCert(pemData []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func sortedSANs(c *x509.Certificate) []string {
	out := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return out
}

func sortedHosts(hosts []string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Issue returns data with a serving certificate for hosts, signed by the CA
// in data, and a new CA first when newCA is set.
func Issue(data map[string][]byte, hosts []string, newCA bool, now time.Time) (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, v := range data {
		out[k] = v
	}
	if newCA {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "itmanager check-in CA"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caLifetime),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		out[keyCACert] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		out[keyCAKey] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	caPair, err := tls.X509KeyPair(out[keyCACert], out[keyCAKey])
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "itmanager check-in"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(servingLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range sortedHosts(hosts) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	out[keyTLSCert] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out[keyTLSKey] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return out, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Rotator keeps the self-signed serving certificate Secret issued and fresh.
// It runs on the leader only; every replica serves from the Secret through
// a CertLoader.
type Rotator struct {
	// Reader reads the Secret from the API server (Secrets of the operator
	// namespace are not cached), Writer writes it.
	Reader client.Reader
	Writer client.Writer
	Secret types.NamespacedName
	Hosts  []string
	Clock  clock.Clock
	Log    logr.Logger
	// Every is how often the certificate is checked.
	Every time.Duration
}

// NeedLeaderElection makes the Rotator leader-only.
func (r *Rotator) NeedLeaderElection() bool { return true }

// Start checks the certificate now and then every r.Every until ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	for {
		if err := r.Reconcile(ctx); err != nil {
			r.Log.Error(err, "Check-in certificate rotation failed; retrying", "secret", r.Secret)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.Clock.After(r.Every):
		}
	}
}

// Reconcile issues or renews the certificate when needed.
func (r *Rotator) Reconcile(ctx context.Context) error {
	secret := &corev1.Secret{}
	err := r.Reader.Get(ctx, r.Secret, secret)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil
	caNeeded, servingNeeded, reason := Rotation(secret.Data, r.Hosts, r.Clock.Now())
	if !servingNeeded {
		return nil
	}
	data, err := Issue(secret.Data, r.Hosts, caNeeded, r.Clock.Now())
	if err != nil {
		return err
	}
	if !exists {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Secret.Namespace, Name: r.Secret.Name,
				Labels: map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		err = r.Writer.Create(ctx, secret)
	} else {
		secret.Data = data
		err = r.Writer.Update(ctx, secret) // guarded by resourceVersion
	}
	if err == nil {
		r.Log.Info("Issued check-in serving certificate", "secret", r.Secret, "reason", reason, "newCA", caNeeded)
	}
	return err
}

// CertLoader serves the certificate of a Secret, re-reading it at most every
// Refresh, so a rotated certificate is picked up without a restart.
type CertLoader struct {
	Reader  client.Reader
	Secret  types.NamespacedName
	Clock   clock.PassiveClock
	Refresh time.Duration

	mu      sync.Mutex
	read    time.Time
	version string
	cert    *tls.Certificate
	ca      []byte
}

func (l *CertLoader) load(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cert != nil && l.Clock.Since(l.read) < l.Refresh {
		return nil
	}
	secret := &corev1.Secret{}
	if err := l.Reader.Get(ctx, l.Secret, secret); err != nil {
		if l.cert != nil {
			return nil // keep serving the last good certificate
		}
		return fmt.Errorf("read check-in certificate Secret %s: %w", l.Secret, err)
	}
	l.read = l.Clock.Now()
	if secret.ResourceVersion == l.version && l.cert != nil {
		return nil
	}
	pair, err := tls.X509KeyPair(secret.Data[keyTLSCert], secret.Data[keyTLSKey])
	if err != nil {
		if l.cert != nil {
			return nil
		}
		return fmt.Errorf("check-in certificate Secret %s: %w", l.Secret, err)
	}
	l.cert, l.version = &pair, secret.ResourceVersion
	l.ca = secret.Data[keyCACert]
	if len(l.ca) == 0 {
		// A Secret from elsewhere (cert-manager, a public CA) may carry no
		// ca.crt: agents then verify with their system roots.
		l.ca = nil
	}
	return nil
}

// GetCertificate is a tls.Config hook.
func (l *CertLoader) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := l.load(hello.Context()); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cert, nil
}

// CA returns the PEM CA bundle agents should trust (nil: system roots).
func (l *CertLoader) CA(ctx context.Context) ([]byte, error) {
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.ca), nil
}

// Leaf returns the serving certificate of the Secret (what the check-in
// service serves from its mount of that Secret).
func (l *CertLoader) Leaf(ctx context.Context) (*x509.Certificate, error) {
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cert.Leaf != nil {
		return l.cert.Leaf, nil
	}
	return x509.ParseCertificate(l.cert.Certificate[0])
}
