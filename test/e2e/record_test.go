//go:build e2e

package e2e

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// event is one change a watch delivered, in the order the API server
// committed them; the initial list comes first as Added.
type event struct {
	at   time.Time
	typ  watch.EventType
	name string
	obj  client.Object
}

// recorder keeps every change of a kind from a watch that starts at the
// resourceVersion of a list, so "never" claims (never two in flight, never
// a second Job) are checked on every transition, not on samples.
type recorder struct {
	mu     sync.Mutex
	events []event
}

// record lists list with opts, then watches from that resourceVersion until
// the spec ends, reconnecting from the last version seen.
func record(list client.ObjectList, opts ...client.ListOption) *recorder {
	GinkgoHelper()
	r := &recorder{}
	Expect(k8s.List(ctx, list, opts...)).To(Succeed())
	items, err := meta.ExtractList(list)
	Expect(err).NotTo(HaveOccurred())
	for _, o := range items {
		r.add(watch.Added, o)
	}
	listOpts := (&client.ListOptions{}).ApplyOptions(opts)
	lw := &cache.ListWatch{WatchFuncWithContext: func(c context.Context, o metav1.ListOptions) (watch.Interface, error) {
		fresh := list.DeepCopyObject().(client.ObjectList)
		raw := o
		if listOpts.LabelSelector != nil {
			raw.LabelSelector = listOpts.LabelSelector.String()
		}
		if listOpts.FieldSelector != nil {
			raw.FieldSelector = listOpts.FieldSelector.String()
		}
		return k8s.Watch(c, fresh, &client.ListOptions{Namespace: listOpts.Namespace, Raw: &raw})
	}}
	wctx, stop := context.WithCancel(ctx)
	w, err := watchtools.NewRetryWatcherWithContext(wctx, list.GetResourceVersion(), lw)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		stop()
		w.Stop()
		<-w.Done()
	})
	go func() {
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				r.add(ev.Type, ev.Object)
			}
		}
	}()
	return r
}

func (r *recorder) add(typ watch.EventType, o runtime.Object) {
	obj := o.(client.Object)
	e := event{at: time.Now(), typ: typ, name: obj.GetName(), obj: obj}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// all is a copy of what was recorded so far.
func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// latest is the last recorded state of each object (deleted ones left out).
func (r *recorder) latest() map[string]client.Object {
	out := map[string]client.Object{}
	for _, e := range r.all() {
		if e.typ == watch.Deleted {
			delete(out, e.name)
			continue
		}
		out[e.name] = e.obj
	}
	return out
}

// states replays the record and returns, per object, the values of f in
// order with consecutive repeats dropped, and the highest number of
// objects for which busy held at once after any event.
func states[T client.Object](r *recorder, f func(T) string, busy func(T) bool) (map[string][]string, int) {
	seq := map[string][]string{}
	now := map[string]bool{}
	peak := 0
	for _, e := range r.all() {
		o := e.obj.(T)
		if e.typ == watch.Deleted {
			delete(now, e.name)
			continue
		}
		v := f(o)
		if s := seq[e.name]; len(s) == 0 || s[len(s)-1] != v {
			seq[e.name] = append(s, v)
		}
		now[e.name] = busy(o)
		n := 0
		for _, b := range now {
			if b {
				n++
			}
		}
		peak = max(peak, n)
	}
	return seq, peak
}
