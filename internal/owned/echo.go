package owned

import (
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// Echoes remembers the resourceVersion each of a Set's own writes returned,
// so the watch event that merely echoes that write starts no reconcile: the
// reconcile that wrote it had already computed everything it depends on.
// Any other change of the object (a hand edit, a deletion, a write by
// someone else) comes with another resourceVersion, or is a deletion, and
// is reconciled as before. The zero Echoes is ready to use.
type Echoes struct {
	mu sync.Mutex
	m  map[string]string
}

// Wrote records the object as a write of ours returned it.
func (w *Echoes) Wrote(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]string{}
	}
	w.m[key(o)] = o.GetResourceVersion()
}

// Echo reports whether o, seen in an event, is exactly our last write of
// it (and forgets that write: each is echoed once).
func (w *Echoes) Echo(o client.Object) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := key(o)
	rv, ok := w.m[k]
	if !ok || rv != o.GetResourceVersion() {
		return false
	}
	delete(w.m, k)
	return true
}

// Forget drops what was remembered of o.
func (w *Echoes) Forget(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key(o))
}

// NotEcho passes every event but the echo of one of our own writes.
func (w *Echoes) NotEcho() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !w.Echo(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !w.Echo(e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool { w.Forget(e.Object); return true },
	}
}
