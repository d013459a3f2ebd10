//go:build integration

package webhookcert_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/itmanager-io/itmanager/internal/testenv"
	"github.com/itmanager-io/itmanager/internal/webhookcert"
)

const (
	namespace     = testenv.OperatorNamespace
	secretName    = "itmanager-webhook-server-cert"
	service       = webhookcert.DefaultServiceName
	configuration = webhookcert.DefaultConfigurationName
	another       = "another-webhook-configuration"
	leaseName     = "webhookcert-test"
	// serviceDNS is the name the API server calls the webhook by.
	serviceDNS = service + "." + namespace + ".svc"
)

// replicas counts the replicas started in this process.
var replicas atomic.Int32

// replica is one manager running the rotation path as main.go wires it,
// under the manager's generated RBAC.
type replica struct {
	certs *webhookcert.Certs
	mgr   ctrl.Manager
	dir   string
	port  int
	stop  context.CancelFunc
	done  chan error
}

func startReplica(t *testing.T, cfg *rest.Config, name string, leaderElection bool) *replica {
	t.Helper()
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{dir: filepath.Join(t.TempDir(), "serving-certs"), port: ports[0], done: make(chan error, 1)}
	r.certs = webhookcert.New(webhookcert.Options{
		Secret: types.NamespacedName{Namespace: namespace, Name: secretName}, ServiceName: service,
		// Controller names are unique in a process, across runs of -count too.
		ConfigurationName: configuration, CertDir: r.dir, ControllerName: fmt.Sprintf("webhook-cert-%s-%d", name, replicas.Add(1)),
		Log: ctrl.Log.WithName(name),
	})
	r.mgr, err = ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  testenv.Scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		LeaderElection:          leaderElection,
		LeaderElectionID:        leaseName,
		LeaderElectionNamespace: namespace,
		WebhookServer:           r.certs.Server(webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: r.port, CertDir: r.dir})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	if err := r.certs.Setup(ctx, r.mgr); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.mgr.Start(ctx) }()
	t.Cleanup(r.halt)
	return r
}

// halt stops the replica and waits until it has stopped.
func (r *replica) halt() {
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	err := <-r.done
	_ = err // a replica that never led ends with "leader election lost"
}

// ready is what the replica's /readyz check says.
func (r *replica) ready() error { return r.mgr.GetWebhookServer().StartedChecker()(nil) }

// served is the certificate the replica serves to a client that trusts
// only caPEM and checks the Service's name, as the API server does.
func (r *replica) served(caPEM []byte) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)),
		&tls.Config{RootCAs: pool, ServerName: serviceDNS, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func webhookConfiguration(name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	path := "/validate"
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "widgets.example.com",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: namespace, Name: service, Path: &path}},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"example.com"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}}}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

// TestManagerRotatesTheWebhookCertificate runs the rotation path of the
// manager against a real API server, as the manager's ServiceAccount with
// exactly the generated RBAC, through a replica's life: not ready and not
// serving before there is a certificate; the leader issues a CA and a
// certificate for the Service's names into the Secret and writes the CA
// into the named configuration only; every replica serves it; a restart
// reuses the Secret; an expiring certificate and an invalid CA are
// replaced and served.
func TestManagerRotatesTheWebhookCertificate(t *testing.T) {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(90 * time.Second)
	g.SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	if testing.Verbose() {
		ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	env, err := testenv.Start(testenv.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	admin, err := client.New(env.Config, client.Options{Scheme: testenv.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	managerConfig, err := env.ManagerConfig(ctx)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(admin.Create(ctx, webhookConfiguration(configuration))).To(Succeed())
	other := webhookConfiguration(another)
	g.Expect(admin.Create(ctx, other)).To(Succeed())
	// Someone else leads, for as long as the test runs.
	now := metav1.NewMicroTime(time.Now())
	g.Expect(admin.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("someone-else"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	})).To(Succeed())

	secret := func() *corev1.Secret {
		s := &corev1.Secret{}
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: secretName}, s)).To(Succeed())
		return s
	}
	caBundle := func(name string) []byte {
		c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: name}, c)).To(Succeed())
		return c.Webhooks[0].ClientConfig.CABundle
	}

	// A replica that does not lead creates the empty Secret, then waits:
	// not ready, not serving, no file.
	follower := startReplica(t, managerConfig, "follower", true)
	g.Expect(secret().Data).To(BeEmpty())
	g.Consistently(follower.ready, 3*time.Second).Should(HaveOccurred())
	g.Expect(filepath.Join(follower.dir, corev1.TLSCertKey)).NotTo(BeAnExistingFile())
	g.Expect(secret().Data).To(BeEmpty(), "a replica that does not lead wrote the Secret")

	// The leader (no election: it always leads) issues them.
	leader := startReplica(t, managerConfig, "leader", false)
	g.Eventually(func(g Gomega) {
		g.Expect(secret().Data).To(HaveKey("ca.crt"))
		g.Expect(caBundle(configuration)).NotTo(BeEmpty())
	}).Should(Succeed())
	issued := secret()
	ca := issued.Data["ca.crt"]
	g.Expect(issued.Data).To(HaveKey("ca.key"))
	g.Expect(caBundle(configuration)).To(Equal(ca), "the configuration got another CA than the Secret's")
	for _, name := range []string{serviceDNS, serviceDNS + ".cluster.local"} {
		g.Expect(verify(issued.Data["tls.crt"], ca, name, time.Now())).To(Succeed(), "the certificate is not for %s", name)
	}
	g.Expect(verify(issued.Data["tls.crt"], ca, "example.com", time.Now())).NotTo(Succeed())
	g.Eventually(leader.certs.Injected()).Should(BeClosed())

	untouched := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	g.Expect(admin.Get(ctx, client.ObjectKey{Name: another}, untouched)).To(Succeed())
	g.Expect(untouched.ResourceVersion).To(Equal(other.ResourceVersion), "another configuration was changed")
	g.Expect(untouched.Webhooks[0].ClientConfig.CABundle).To(BeEmpty())

	// Both replicas serve the certificate; the files hold no CA key.
	for _, r := range []*replica{leader, follower} {
		g.Eventually(r.ready).Should(Succeed())
		g.Eventually(func() ([]byte, error) { return servedRaw(r, ca) }).Should(Equal(pemBlock(issued.Data["tls.crt"])))
		g.Expect(filepath.Join(r.dir, "ca.key")).NotTo(BeAnExistingFile())
		g.Expect(os.ReadFile(filepath.Join(r.dir, corev1.TLSPrivateKeyKey))).To(Equal(issued.Data["tls.key"]))
	}
	g.Expect(follower.certs.Injected()).NotTo(BeClosed(), "the replica that does not lead injected the CA")

	// A restart of the leader reuses the Secret: same CA, same
	// certificate, no write.
	leader.halt()
	leader = startReplica(t, managerConfig, "restarted", false)
	g.Eventually(leader.ready).Should(Succeed())
	g.Eventually(leader.certs.Injected()).Should(BeClosed())
	g.Expect(secret().ResourceVersion).To(Equal(issued.ResourceVersion), "a restart rewrote the Secret")
	g.Expect(caBundle(configuration)).To(Equal(ca))

	// A certificate about to expire (within the 90 days look-ahead) is
	// replaced under the same CA, and every replica serves the new one.
	expiring := secret()
	crt, key := signed(t, expiring.Data["ca.crt"], expiring.Data["ca.key"], serviceDNS, 24*time.Hour)
	expiring.Data["tls.crt"], expiring.Data["tls.key"] = crt, key
	g.Expect(admin.Update(ctx, expiring)).To(Succeed())
	g.Eventually(func(g Gomega) {
		s := secret()
		g.Expect(s.Data["tls.crt"]).NotTo(Equal(crt))
		g.Expect(s.Data["ca.crt"]).To(Equal(ca))
		g.Expect(verify(s.Data["tls.crt"], ca, serviceDNS, time.Now().Add(180*24*time.Hour))).To(Succeed())
	}).Should(Succeed())
	renewed := secret().Data["tls.crt"]
	for _, r := range []*replica{leader, follower} {
		g.Eventually(func() ([]byte, error) { return servedRaw(r, ca) }).Should(Equal(pemBlock(renewed)))
	}

	// An invalid CA is replaced, written into the configuration, and the
	// replicas serve a certificate of the new CA.
	broken := secret()
	broken.Data["ca.crt"] = []byte("not a certificate")
	g.Expect(admin.Update(ctx, broken)).To(Succeed())
	var newCA []byte
	g.Eventually(func(g Gomega) {
		s := secret()
		g.Expect(s.Data["ca.crt"]).NotTo(Or(Equal(ca), Equal([]byte("not a certificate"))))
		g.Expect(caBundle(configuration)).To(Equal(s.Data["ca.crt"]))
		newCA = s.Data["ca.crt"]
	}).Should(Succeed())
	for _, r := range []*replica{leader, follower} {
		g.Eventually(func() error { _, err := r.served(newCA); return err }).Should(Succeed())
	}
	g.Expect(caBundle(another)).To(BeEmpty())
}

// servedRaw is the DER of the served certificate.
func servedRaw(r *replica, ca []byte) ([]byte, error) {
	c, err := r.served(ca)
	if err != nil {
		return nil, err
	}
	return c.Raw, nil
}

func pemBlock(data []byte) []byte {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil
	}
	return b.Bytes
}

// verify checks certPEM chains to caPEM for name at the time given.
func verify(certPEM, caPEM []byte, name string, at time.Time) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA")
	}
	cert, err := x509.ParseCertificate(pemBlock(certPEM))
	if err != nil {
		return err
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// signed is a serving certificate for name from the CA, valid for d.
func signed(t *testing.T, caPEM, caKeyPEM []byte, name string, d time.Duration) ([]byte, []byte) {
	t.Helper()
	ca, err := x509.ParseCertificate(pemBlock(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS1PrivateKey(pemBlock(caKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(d),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	var crt, k bytes.Buffer
	if err := pem.Encode(&crt, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	if err := pem.Encode(&k, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}); err != nil {
		t.Fatal(err)
	}
	return crt.Bytes(), k.Bytes()
}
