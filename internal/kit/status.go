package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// Status is the one status writer. FieldManager names the writer in
// managedFields. Shared selects the strategy:
//
//   - false (the operator owns the status outright): server-side apply of
//     the whole status, forcing ownership, pinned to the object's UID, so a
//     reconcile that ran on a cache one step behind its own last write
//     neither conflicts nor loses anything. Conditions are a map list, so a
//     condition someone else set and this writer does not send (an
//     approval) is never touched.
//   - true (several writers share the status, as a Device's): a merge patch
//     of what changed since base, under an optimistic lock, so nothing
//     another writer set after our read is overwritten with our older copy.
//
// A write whose status equals base's, or equals our own last write over the
// resourceVersion the cache still shows, sends nothing.
type Status struct {
	Client       client.Client
	FieldManager string
	Shared       bool

	memo Memo
}

const statusKey = "status"

// WriteOption changes one Write.
type WriteOption func(*writeOptions)

type writeOptions struct{ atVersion bool }

// AtReadVersion makes a server-side apply conditional on the
// resourceVersion read (base's): for a status computed from what the object
// said (an onboarding phase that decides access), which must not replace a
// newer one. The write then fails with a Conflict the caller retries.
// (A Shared write is always conditional.)
func AtReadVersion() WriteOption { return func(o *writeOptions) { o.atVersion = true } }

// Write sends obj's status if it differs from base's (the object as read).
// It reports whether a request was sent; after one, obj carries the
// resourceVersion the write produced. obj and base are pointers to the
// same kind, each with a Status field.
func (w *Status) Write(ctx context.Context, base, obj client.Object, opts ...WriteOption) (bool, error) {
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	st := statusOf(obj)
	if equality.Semantic.DeepEqual(statusOf(base), st) {
		return false, nil
	}
	owner := string(obj.GetUID())
	if w.memo.Pending(owner, statusKey, base.GetResourceVersion(), st) {
		return false, nil
	}
	// What was computed, before the write replaces obj's status with the
	// server's answer.
	sent, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	readRV := base.GetResourceVersion()
	if w.Shared {
		err = w.Client.Status().Patch(ctx, obj, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), client.FieldOwner(w.FieldManager))
	} else {
		rv := ""
		if o.atVersion {
			rv = base.GetResourceVersion()
		}
		err = w.apply(ctx, obj, st, rv)
	}
	if err != nil {
		w.memo.Forget(owner, statusKey)
		return true, err
	}
	w.memo.Wrote(owner, statusKey, readRV, json.RawMessage(sent))
	return true, nil
}

// ForgetOnDelete is a predicate for the watch of the written kind: it
// forgets a deleted object's memo and lets every event through.
func (w *Status) ForgetOnDelete() predicate.Predicate {
	return predicate.Funcs{DeleteFunc: func(e event.DeleteEvent) bool { w.Forget(e.Object); return true }}
}

// Forget drops what was remembered of obj's writes (call when it is gone).
func (w *Status) Forget(obj client.Object) {
	w.memo.ForgetOwner(string(obj.GetUID()))
}

func (w *Status) apply(ctx context.Context, obj client.Object, status any, resourceVersion string) error {
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return err
	}
	gvk, err := w.Client.GroupVersionKindFor(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": st}}
	u.SetGroupVersionKind(gvk)
	u.SetName(obj.GetName())
	u.SetNamespace(obj.GetNamespace())
	u.SetUID(obj.GetUID())
	u.SetResourceVersion(resourceVersion)
	if err := w.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(w.FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply status of %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	// As a patch does, obj follows the write: a caller that writes again
	// in the same pass (conditional on the version read) builds on ours.
	if rv := u.GetResourceVersion(); rv != "" {
		obj.SetResourceVersion(rv)
	}
	return nil
}

// statusOf returns a pointer to obj's Status field.
func statusOf(obj client.Object) any {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("kit: %T is not a pointer to a struct", obj))
	}
	f := v.Elem().FieldByName("Status")
	if !f.IsValid() {
		panic(fmt.Sprintf("kit: %T has no Status field", obj))
	}
	return f.Addr().Interface()
}
