package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// syncer writes the Secret's serving certificate and key into CertDir on
// every replica, whenever they change, and marks the replica ready after
// the first write.
type syncer struct {
	certs  *Certs
	config *rest.Config
	scheme *runtime.Scheme
	mapper meta.RESTMapper
	log    logr.Logger
}

// NeedLeaderElection is false: every replica serves the webhook.
func (s *syncer) NeedLeaderElection() bool { return false }

// Start watches the one Secret (a field selector on its name, so the
// informer holds nothing else) and syncs the files on every change.
func (s *syncer) Start(ctx context.Context) error {
	key := s.certs.opts.Secret
	c, err := cache.New(s.config, cache.Options{
		Scheme: s.scheme, Mapper: s.mapper,
		DefaultNamespaces: map[string]cache.Config{key.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("metadata.name", key.Name)},
		},
	})
	if err != nil {
		return fmt.Errorf("watch the webhook certificate Secret %s: %w", key, err)
	}
	informer, err := c.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("watch the webhook certificate Secret %s: %w", key, err)
	}
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
	}); err != nil {
		return fmt.Errorf("watch the webhook certificate Secret %s: %w", key, err)
	}
	errs := make(chan error, 1)
	go func() { errs <- c.Start(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("watch the webhook certificate Secret %s: %w", key, err)
		case <-changed:
			secret := &corev1.Secret{}
			if err := c.Get(ctx, key, secret); err != nil {
				if !apierrors.IsNotFound(err) {
					s.log.Error(err, "Reading the webhook certificate Secret failed", "secret", key)
				}
				continue
			}
			if err := s.sync(secret); err != nil {
				s.log.Error(err, "Writing the webhook serving certificate failed", "secret", key, "dir", s.certs.opts.CertDir)
			}
		}
	}
}

// sync writes tls.crt and tls.key from secret when they form a key pair
// that differs from the files. Nothing of their content is logged.
func (s *syncer) sync(secret *corev1.Secret) error {
	crt, key := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		s.log.V(1).Info("The webhook certificate Secret holds no certificate yet", "secret", s.certs.opts.Secret)
		return nil
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		// The rotators replace it; keep serving what is there.
		s.log.Info("The webhook certificate Secret holds no valid key pair; keeping the current files", "secret", s.certs.opts.Secret)
		return nil
	}
	wrote, err := writeFiles(s.certs.opts.CertDir, map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key})
	if err != nil {
		return err
	}
	if wrote {
		s.log.Info("Wrote the webhook serving certificate", "dir", s.certs.opts.CertDir)
	}
	s.certs.markReady()
	return nil
}

// dataLink points at the directory holding the current files; each file
// name is a link into it, so a reader following tls.crt and tls.key sees
// one pair or the other, never a mix (as the kubelet writes a Secret
// volume, which the webhook server's certificate watcher follows).
const dataLink = "..data"

// writeFiles makes dir hold files, atomically as a set; false when it
// already did.
func writeFiles(dir string, files map[string][]byte) (bool, error) {
	same := true
	for name, content := range files {
		if old, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(old, content) {
			same = false
			break
		}
	}
	if same {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	data, err := os.MkdirTemp(dir, "..certs-")
	if err != nil {
		return false, err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(data, name), content, 0o600); err != nil {
			_ = os.RemoveAll(data)
			return false, err
		}
	}
	previous, _ := os.Readlink(filepath.Join(dir, dataLink))
	tmp := filepath.Join(dir, dataLink+"_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(data), tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return false, err
	}
	for name := range files {
		link, target := filepath.Join(dir, name), filepath.Join(dataLink, name)
		if t, err := os.Readlink(link); err == nil && t == target {
			continue
		}
		// First write (or a plain file left there): not atomic, but
		// nothing serves before the first write completes.
		if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
			return false, err
		}
		if err := os.Symlink(target, link); err != nil {
			return false, err
		}
	}
	if previous != "" && previous != filepath.Base(data) {
		_ = os.RemoveAll(filepath.Join(dir, previous))
	}
	return true, nil
}
