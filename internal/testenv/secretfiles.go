package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MountSecret does what the kubelet does for a Secret volume of the
// check-in service: it waits (up to timeout) until the Secret key exists,
// writes each of its keys as a file into dir, and then keeps the files in
// step every `every` until ctx ends (each file replaced atomically). The
// reader is an admin's: the check-in service itself may not read Secrets.
func MountSecret(ctx context.Context, admin client.Reader, key types.NamespacedName, dir string, timeout, every time.Duration) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	sync := func() (bool, error) {
		s := &corev1.Secret{}
		if err := admin.Get(ctx, key, s); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
			return false, nil
		}
		for k, v := range s.Data {
			path := filepath.Join(dir, k)
			if old, err := os.ReadFile(path); err == nil && string(old) == string(v) {
				continue
			}
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, v, 0o600); err != nil {
				return false, err
			}
			if err := os.Rename(tmp, path); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	deadline := time.Now().Add(timeout)
	for {
		ok, err := sync()
		if err != nil {
			return fmt.Errorf("mount Secret %s: %w", key, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Secret %s holds no tls.crt and tls.key after %s", key, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
				_, _ = sync()
			}
		}
	}()
	return nil
}
