package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// writeMemo remembers, per object, what the controller last wrote and the
// resourceVersion its cache showed before that write. Until the cache moves
// past that version, a reconcile that computes the same content again is
// looking at its own write not yet seen, not at drift: writing again would
// be a pointless request (at fleet scale, one per affected object per event).
// Once the cache shows any newer version, ours or someone's edit, the normal
// comparison decides.
//
// Entries are grouped by owner (the policy), so everything an owner's
// writes left behind goes with it.
type writeMemo struct {
	mu sync.Mutex
	m  map[string]map[string]memoEntry
}

type memoEntry struct {
	sum    [sha256.Size]byte
	seenRV string
}

func contentSum(v any) ([sha256.Size]byte, bool) {
	data, err := json.Marshal(v)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(data), true
}

// pending reports whether content was already written over the version the
// cache still shows (cachedRV).
func (w *writeMemo) pending(owner, key, cachedRV string, content any) bool {
	sum, ok := contentSum(content)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e, found := w.m[owner][key]
	return found && e.sum == sum && e.seenRV == cachedRV
}

// wrote records that content was written over cachedRV.
func (w *writeMemo) wrote(owner, key, cachedRV string, content any) {
	sum, ok := contentSum(content)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]map[string]memoEntry{}
	}
	if w.m[owner] == nil {
		w.m[owner] = map[string]memoEntry{}
	}
	w.m[owner][key] = memoEntry{sum: sum, seenRV: cachedRV}
}

func (w *writeMemo) forget(owner, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m[owner], key)
}

// forgetOwner drops everything remembered for an owner that is gone.
func (w *writeMemo) forgetOwner(owner string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, owner)
}

// ownWrites remembers the resourceVersion each of the controller's own
// writes of a generated object returned, so the watch event that merely
// echoes that write starts no reconcile: the reconcile that wrote it had
// already computed everything it depends on. Any other change of the
// object (a hand edit, a deletion, a write by someone else) comes with
// another resourceVersion, or is a deletion, and is reconciled as before.
type ownWrites struct {
	mu sync.Mutex
	m  map[string]string
}

func writeKey(o client.Object) string {
	return fmt.Sprintf("%T/%s/%s", o, o.GetNamespace(), o.GetName())
}

// wrote records the object as a write of ours returned it.
func (w *ownWrites) wrote(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]string{}
	}
	w.m[writeKey(o)] = o.GetResourceVersion()
}

// echo reports whether o, seen in an event, is exactly our last write of
// it (and forgets that write: each is echoed once).
func (w *ownWrites) echo(o client.Object) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := writeKey(o)
	rv, ok := w.m[k]
	if !ok || rv != o.GetResourceVersion() {
		return false
	}
	delete(w.m, k)
	return true
}

func (w *ownWrites) forget(o client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, writeKey(o))
}

// notEcho passes every event but the echo of one of our own writes.
func (w *ownWrites) notEcho() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !w.echo(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !w.echo(e.ObjectNew) },
		DeleteFunc: func(e event.DeleteEvent) bool { w.forget(e.Object); return true },
	}
}
