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
	"sync"
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
	ctx   context.Context
	stop  context.CancelFunc
	done  chan error
	// started is whether start ran (halt waits for the manager then).
	started bool
}

func startReplica(t *testing.T, cfg *rest.Config, name string, leaderElection bool) *replica {
	t.Helper()
	r := newReplica(t, cfg, name, leaderElection)
	r.start()
	return r
}

// newReplica sets a replica up (the Secret is created if missing) without
// starting it.
func newReplica(t *testing.T, cfg *rest.Config, name string, leaderElection bool) *replica {
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
	r.ctx, r.stop = ctx, cancel
	if err := r.certs.Setup(ctx, r.mgr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.halt)
	return r
}

// start runs the replica's manager.
func (r *replica) start() {
	r.started = true
	go func() { r.done <- r.mgr.Start(r.ctx) }()
}

// halt stops the replica and waits until it has stopped.
func (r *replica) halt() {
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	if !r.started {
		return
	}
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
// exactly the generated RBAC, through a replica's life while another Pod
// (an old one without a rotator, as in an upgrade) holds the leader Lease
// throughout: not ready and not serving before there is a certificate; a
// replica that does not lead issues a CA and a certificate for the
// Service's names into the Secret, writes the CA into the named
// configuration only and turns ready; a second replica serves the same
// ones without rewriting them; a restart reuses the Secret; an expiring
// certificate and an invalid CA are replaced and served by every replica.
func TestManagerRotatesTheWebhookCertificate(t *testing.T) {
	g, admin, _, managerConfig := setUp(t)
	ctx := context.Background()

	g.Expect(admin.Create(ctx, webhookConfiguration(configuration))).To(Succeed())
	other := webhookConfiguration(another)
	g.Expect(admin.Create(ctx, other)).To(Succeed())

	secret := secretOf(g, admin)
	caBundle := caBundleOf(g, admin)

	// The first replica creates the empty Secret and, not leading, issues.
	first := startReplica(t, managerConfig, "first", true)
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
	g.Eventually(first.certs.Injected()).Should(BeClosed())
	g.Eventually(first.ready).Should(Succeed(), "a replica that does not lead did not turn ready")

	untouched := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	g.Expect(admin.Get(ctx, client.ObjectKey{Name: another}, untouched)).To(Succeed())
	g.Expect(untouched.ResourceVersion).To(Equal(other.ResourceVersion), "another configuration was changed")
	g.Expect(untouched.Webhooks[0].ClientConfig.CABundle).To(BeEmpty())

	// A second replica finds the Secret filled: it serves the same
	// certificate and rewrites nothing.
	second := startReplica(t, managerConfig, "second", true)
	for _, r := range []*replica{first, second} {
		g.Eventually(r.ready).Should(Succeed())
		g.Eventually(func() ([]byte, error) { return servedRaw(r, ca) }).Should(Equal(pemBlock(issued.Data["tls.crt"])))
		g.Expect(filepath.Join(r.dir, "ca.key")).NotTo(BeAnExistingFile())
		g.Expect(os.ReadFile(filepath.Join(r.dir, corev1.TLSPrivateKeyKey))).To(Equal(issued.Data["tls.key"]))
	}
	g.Eventually(second.certs.Injected()).Should(BeClosed())
	g.Expect(secret().ResourceVersion).To(Equal(issued.ResourceVersion), "a second replica rewrote the Secret")

	// A restart reuses the Secret: same CA, same certificate, no write.
	first.halt()
	first = startReplica(t, managerConfig, "restarted", true)
	g.Eventually(first.ready).Should(Succeed())
	g.Eventually(first.certs.Injected()).Should(BeClosed())
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
	for _, r := range []*replica{first, second} {
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
	for _, r := range []*replica{first, second} {
		g.Eventually(func() error { _, err := r.served(newCA); return err }).Should(Succeed())
	}
	g.Expect(caBundle(another)).To(BeEmpty())
}

// TestTwoReplicasStartingAtOnceOnAnEmptySecretEndWithOneCA starts two
// replicas, neither leading, at the same moment against the empty Secret
// the chart ships (both try to fill it): every version of the Secret seen
// through a watch carries at most one CA, and that CA is the one in the
// configuration and the one both replicas' certificates chain to.
func TestTwoReplicasStartingAtOnceOnAnEmptySecretEndWithOneCA(t *testing.T) {
	g, admin, adminConfig, managerConfig := setUp(t)
	ctx := context.Background()
	g.Expect(admin.Create(ctx, webhookConfiguration(configuration))).To(Succeed())
	empty := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretName}, Type: corev1.SecretTypeOpaque}
	g.Expect(admin.Create(ctx, empty)).To(Succeed())

	// Every CA the Secret ever holds, from its empty version on.
	watcher, err := client.NewWithWatch(adminConfig, client.Options{Scheme: testenv.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	w, err := watcher.Watch(ctx, &corev1.SecretList{}, client.InNamespace(namespace),
		client.MatchingFields{"metadata.name": secretName}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: empty.ResourceVersion}})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	cas := map[string]bool{}
	writes := 0
	go func() {
		for ev := range w.ResultChan() {
			if s, ok := ev.Object.(*corev1.Secret); ok && len(s.Data["ca.crt"]) > 0 {
				mu.Lock()
				cas[string(s.Data["ca.crt"])] = true
				writes++
				mu.Unlock()
			}
		}
	}()

	a := newReplica(t, managerConfig, "a", true)
	b := newReplica(t, managerConfig, "b", true)
	a.start()
	b.start()

	secret := secretOf(g, admin)
	caBundle := caBundleOf(g, admin)
	var ca []byte
	g.Eventually(func(g Gomega) {
		s := secret()
		g.Expect(s.Data).To(HaveKey("ca.crt"))
		g.Expect(caBundle(configuration)).To(Equal(s.Data["ca.crt"]))
		ca = s.Data["ca.crt"]
	}).Should(Succeed())
	tlsCrt := secret().Data["tls.crt"]
	for _, r := range []*replica{a, b} {
		g.Eventually(r.ready).Should(Succeed())
		g.Eventually(r.certs.Injected()).Should(BeClosed())
		g.Eventually(func() ([]byte, error) { return servedRaw(r, ca) }).Should(Equal(pemBlock(tlsCrt)))
	}
	// Settled: nothing rewrites the Secret or the bundle afterwards.
	settled := secret().ResourceVersion
	g.Consistently(func(g Gomega) {
		g.Expect(secret().ResourceVersion).To(Equal(settled))
		g.Expect(caBundle(configuration)).To(Equal(ca))
	}, 3*time.Second).Should(Succeed())
	mu.Lock()
	defer mu.Unlock()
	g.Expect(cas).To(HaveLen(1), "the Secret held more than one CA")
	g.Expect(cas).To(HaveKey(string(ca)))
	t.Logf("Secret versions with a CA seen: %d", writes)
}

// setUp starts an API server with the test's Lease held by someone else
// (as an old Pod without a rotator holds it in an upgrade) for as long as
// the test runs, and returns an admin client, its config and the
// manager's config.
func setUp(t *testing.T) (*WithT, client.Client, *rest.Config, *rest.Config) {
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
	now := metav1.NewMicroTime(time.Now())
	g.Expect(admin.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: leaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("someone-else"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	})).To(Succeed())
	return g, admin, env.Config, managerConfig
}

// secretOf reads the Secret as it is now.
func secretOf(g *WithT, admin client.Client) func() *corev1.Secret {
	return func() *corev1.Secret {
		s := &corev1.Secret{}
		g.Expect(admin.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: secretName}, s)).To(Succeed())
		return s
	}
}

// caBundleOf reads the first webhook's CA bundle of a configuration.
func caBundleOf(g *WithT, admin client.Client) func(string) []byte {
	return func(name string) []byte {
		c := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		g.Expect(admin.Get(context.Background(), client.ObjectKey{Name: name}, c)).To(Succeed())
		return c.Webhooks[0].ClientConfig.CABundle
	}
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
