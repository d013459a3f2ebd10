// Package informer builds the manager's informers: client-go's, except that
// a refused connection (the API server is not listening: restarted,
// upgraded, its node rebooting) is retried at a short fixed interval
// instead of through the reflector's exponential backoff.
//
// The reflector doubles its delay on every failure of an outage, from
// 0.8 s up to 30 s plus up to 100 % jitter, and keeps the reached delay
// for two minutes: after a 10 s API server restart the manager's caches
// came back 8 to 13 s after the server was ready again, after a long one
// they would take up to a minute, and until then every decision (a
// device's CheckedIn, the addresses it opens) is taken on what the cache
// held before the outage. A refused connection costs the server nothing,
// so it is retried every RetryInterval; whatever the server answers (429
// while its watch cache initializes, 5xx when overloaded) still goes
// through the reflector's backoff.
package informer

import (
	"context"
	"math/rand/v2"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// RetryInterval is how often a refused list or watch is tried again
// (jittered by up to +50 %).
const RetryInterval = 500 * time.Millisecond

// New is a cache.Options.NewInformer for controller-runtime: client-go's
// shared informer over a ListerWatcher that retries refused connections.
func New(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(Reconnecting(lw, RetryInterval), obj, resync, indexers)
}

// ListerWatcher lists and watches with or without a context.
type ListerWatcher interface {
	toolscache.ListerWatcher
	toolscache.ListerWatcherWithContext
}

// Reconnecting wraps lw so that a list or watch refused by a server that is
// not listening is tried again every interval until it is answered or its
// context ends.
func Reconnecting(lw toolscache.ListerWatcher, interval time.Duration) ListerWatcher {
	return &reconnecting{lw: toolscache.ToListerWatcherWithContext(lw), interval: interval}
}

type reconnecting struct {
	lw       toolscache.ListerWatcherWithContext
	interval time.Duration
}

// List and Watch keep the wrapper a ListerWatcher for callers without a
// context; the reflector uses the context variants.
func (r *reconnecting) List(opts metav1.ListOptions) (runtime.Object, error) {
	return r.ListWithContext(context.Background(), opts)
}

func (r *reconnecting) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return r.WatchWithContext(context.Background(), opts)
}

func (r *reconnecting) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return retryRefused(ctx, r.interval, func() (runtime.Object, error) { return r.lw.ListWithContext(ctx, opts) })
}

func (r *reconnecting) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return retryRefused(ctx, r.interval, func() (watch.Interface, error) { return r.lw.WatchWithContext(ctx, opts) })
}

// retryRefused calls f until it returns anything but a refused connection,
// or ctx ends (then with f's last answer).
func retryRefused[T any](ctx context.Context, interval time.Duration, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !utilnet.IsConnectionRefused(err) {
			return v, err
		}
		wait := interval + time.Duration(rand.Int64N(int64(interval)/2+1)) //nolint:gosec // jitter, not security
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
	}
}
