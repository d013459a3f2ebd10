// Package webhookcert keeps the admission webhook's serving certificate
// when the manager issues it itself (the default of the chart and
// config/default), so no manifest carries key material or a CA bundle and a
// rendered chart is the same on every render (Argo CD stays Synced).
//
// cert-controller's rotator, on every replica (no leader is needed, so a
// new Pod becomes ready while an old one without a rotator still leads,
// as in an upgrade from a chart that rendered the certificate), keeps a
// self-signed CA and a serving certificate for the webhook Service's DNS
// names in one Secret of the operator namespace (renewing them before they
// expire, replacing what is invalid) and writes the CA into the one
// ValidatingWebhookConfiguration it is given. Replicas racing to fill or
// renew the Secret write it with the resourceVersion they read, so one
// wins and the others' updates fail with a conflict, re-read the winner's
// Secret and find nothing to do: one CA. On every replica a syncer watches
// that Secret and writes the serving certificate and key (never the CA
// key) into the webhook server's certificate directory, a writable
// emptyDir, where the webhook server's certificate watcher reloads them. The webhook server starts, and /readyz
// turns ready, only once that certificate is there.
package webhookcert

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// The rotator reads the Secret through an informer of every Secret in the
// operator namespace (cert-controller's cache has no field selector), and
// the syncer watches the one Secret; updates go to that Secret (the
// operator namespace's Role already grants get, create and update there,
// for the check-in certificate). The webhook configuration is watched
// cluster-wide (no informer can be limited to a name) and updated only
// by name. The namespace and the name are the defaults (config/default);
// the chart maps them to the release's (hack/chartrbac).
// +kubebuilder:rbac:groups="",namespace=itmanager-system,resources=secrets,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=itmanager-validating-webhook-configuration,verbs=update

// Defaults of the names the manager's flags give.
const (
	DefaultServiceName       = "itmanager-webhook-service"
	DefaultConfigurationName = "itmanager-validating-webhook-configuration"
	// DefaultControllerName is the rotator's controller (and log) name.
	DefaultControllerName = "webhook-cert-rotator"
	// FieldOwner is the field manager of the injected caBundle.
	FieldOwner = "itmanager-webhook-cert"
)

// Options are what the manager's flags say.
type Options struct {
	// Secret holds ca.crt, ca.key, tls.crt and tls.key; created empty if
	// missing.
	Secret types.NamespacedName
	// ServiceName is the webhook Service in Secret's namespace: the
	// certificate is for <service>.<namespace>.svc (what the API server
	// calls) and its other in-cluster names.
	ServiceName string
	// ConfigurationName is the ValidatingWebhookConfiguration that gets
	// the CA bundle; no other is touched.
	ConfigurationName string
	// CertDir is the webhook server's certificate directory (writable).
	CertDir string
	// ControllerName names the rotator's controller; unique in a process
	// (default DefaultControllerName).
	ControllerName string
	Log            logr.Logger
}

// Certs wires certificate rotation into a manager: Server wraps the
// manager's webhook server (before the manager exists), Setup adds the
// rotator and the syncer once it does.
type Certs struct {
	opts Options
	// ready is closed once the serving certificate is in CertDir.
	ready     chan struct{}
	readyOnce sync.Once
	// injected is cert-controller's IsReady: closed once this replica's
	// rotator wrote (or found) the CA in the webhook configuration.
	injected chan struct{}
}

// New is Certs for opts.
func New(opts Options) *Certs {
	if opts.ControllerName == "" {
		opts.ControllerName = DefaultControllerName
	}
	return &Certs{opts: opts, ready: make(chan struct{}), injected: make(chan struct{})}
}

// DNSNames are the names the serving certificate is for, the first the one
// the API server calls.
func (c *Certs) DNSNames() []string {
	svc, ns := c.opts.ServiceName, c.opts.Secret.Namespace
	return []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc + "." + ns, svc}
}

// Ready is closed once this replica has a serving certificate in CertDir.
func (c *Certs) Ready() <-chan struct{} { return c.ready }

// Injected is closed once this replica's rotator has written the Secret's
// CA into the webhook configuration (every replica does, whether it leads
// or not).
func (c *Certs) Injected() <-chan struct{} { return c.injected }

func (c *Certs) markReady() { c.readyOnce.Do(func() { close(c.ready) }) }

// Server is s started only once this replica has its serving certificate
// (the webhook server reads it at start and would fail without it), and
// whose started check fails until then.
func (c *Certs) Server(s webhook.Server) webhook.Server {
	return &gatedServer{Server: s, certs: c, ready: c.ready}
}

// Setup makes sure the Secret exists (the rotator only updates it), then
// adds the rotator and the syncer to mgr, both on every replica.
func (c *Certs) Setup(ctx context.Context, mgr ctrl.Manager) error {
	if err := c.ensureSecret(ctx, mgr); err != nil {
		return err
	}
	names := c.DNSNames()
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      c.opts.Secret,
		CertDir:        c.opts.CertDir,
		CAName:         "itmanager-webhook-ca",
		CAOrganization: "itmanager",
		DNSName:        names[0],
		ExtraDNSNames:  names[1:],
		IsReady:        c.injected,
		Webhooks:       []rotator.WebhookInfo{{Name: c.opts.ConfigurationName, Type: rotator.Validating}},
		FieldOwner:     FieldOwner,
		// Every replica issues, so none waits for a leader to become
		// ready (an old leader without a rotator during an upgrade);
		// updates of the Secret are guarded by its resourceVersion.
		RequireLeaderElection: false,
		// The webhook server reloads the files; no restart on refresh.
		RestartOnSecretRefresh: false,
		ExtKeyUsages:           &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Inject the CA only once this replica's own certificate is in place.
		EnableReadinessCheck: true,
		ControllerName:       c.opts.ControllerName,
	}); err != nil {
		return fmt.Errorf("add the webhook certificate rotator: %w", err)
	}
	return mgr.Add(&syncer{
		certs: c, config: mgr.GetConfig(), scheme: mgr.GetScheme(), mapper: mgr.GetRESTMapper(),
		log: c.opts.Log.WithName("files"),
	})
}

// ensureSecret creates the Secret, empty and Opaque (a kubernetes.io/tls
// Secret must hold keys), unless it exists: the chart and config/default
// ship it so it goes with an uninstall; this covers a Secret deleted by
// hand, as the rotator fails to start without one.
func (c *Certs) ensureSecret(ctx context.Context, mgr ctrl.Manager) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.opts.Secret.Namespace, Name: c.opts.Secret.Name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "itmanager"},
		},
		Type: corev1.SecretTypeOpaque,
	}
	if err := mgr.GetClient().Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the webhook certificate Secret %s: %w", c.opts.Secret, err)
	}
	return nil
}

// CertsOf is the Certs whose Server s is, if it is one.
func CertsOf(s webhook.Server) (*Certs, bool) {
	g, ok := s.(*gatedServer)
	if !ok {
		return nil, false
	}
	return g.certs, true
}

// gatedServer holds a webhook server back until ready is closed.
type gatedServer struct {
	webhook.Server
	certs *Certs
	ready <-chan struct{}
}

// Start waits for the serving certificate, then serves until ctx ends.
func (s *gatedServer) Start(ctx context.Context) error {
	select {
	case <-s.ready:
		return s.Server.Start(ctx)
	case <-ctx.Done():
		return nil
	}
}

// errNoCertificate is what /readyz says before the certificate is there.
var errNoCertificate = errors.New("the webhook serving certificate is not there yet")

// StartedChecker fails until the certificate is there, then is the
// server's own check (it completes a TLS handshake).
func (s *gatedServer) StartedChecker() healthz.Checker {
	started := s.Server.StartedChecker()
	return func(req *http.Request) error {
		select {
		case <-s.ready:
			return started(req)
		default:
			return errNoCertificate
		}
	}
}
