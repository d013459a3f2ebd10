package informer

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// refused is what client-go returns while nothing listens on the API
// server's port.
var refused = &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api/v1/pods",
	Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}

func TestReconnecting(t *testing.T) {
	tooMany := apierrors.NewTooManyRequests("storage is (re)initializing", 1)
	gone := apierrors.NewResourceExpired("too old resource version: 1 (2)")
	internal := apierrors.NewInternalError(errors.New("etcd unavailable"))
	for name, tc := range map[string]struct {
		answers   []error // one per call; the last repeats
		calls     int
		want      error
		cancelled bool
	}{
		"answered at once":                           {answers: []error{nil}, calls: 1},
		"refused, then answered":                     {answers: []error{refused, refused, nil}, calls: 3},
		"refused, then 429: left to the reflector":   {answers: []error{refused, tooMany}, calls: 2, want: tooMany},
		"410 Gone is returned at once":               {answers: []error{gone}, calls: 1, want: gone},
		"a server error is returned at once":         {answers: []error{internal}, calls: 1, want: internal},
		"refused until the context ends: last error": {answers: []error{refused}, want: refused, cancelled: true},
	} {
		t.Run(name, func(t *testing.T) {
			for _, op := range []string{"list", "watch"} {
				calls := 0
				answer := func() error {
					calls++
					return tc.answers[min(calls, len(tc.answers))-1]
				}
				lw := &toolscache.ListWatch{
					ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
						if err := answer(); err != nil {
							return nil, err
						}
						return &metav1.List{}, nil
					},
					WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
						if err := answer(); err != nil {
							return nil, err
						}
						return watch.NewFake(), nil
					},
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if tc.cancelled {
					cancel()
					ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
				}
				r := Reconnecting(lw, time.Millisecond)
				var err error
				if op == "list" {
					_, err = r.ListWithContext(ctx, metav1.ListOptions{})
				} else {
					_, err = r.WatchWithContext(ctx, metav1.ListOptions{})
				}
				cancel()
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: error %v, want %v", op, err, tc.want)
				}
				if tc.cancelled {
					if calls < 2 {
						t.Errorf("%s: %d calls before the context ended, want it retried", op, calls)
					}
				} else if calls != tc.calls {
					t.Errorf("%s: %d calls, want %d", op, calls, tc.calls)
				}
			}
		})
	}
}
