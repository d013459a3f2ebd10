package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/itmanager-io/itmanager/internal/text"
)

// Bounds of messages the API limits.
const (
	// maxConditionMessage is metav1.Condition's message limit.
	maxConditionMessage = 32768
	// maxUpgradeMessage is Device status.upgrade.message's limit.
	maxUpgradeMessage = 1024
)

// applyStatus writes obj's status by server-side apply under fieldManager:
// for kinds whose status the operator owns outright, so a reconcile that ran
// on a cache one step behind its own last write neither conflicts nor loses
// anything. The UID pins it to this object, never a successor of the same
// name.
func applyStatus(ctx context.Context, c client.Client, obj client.Object, status any, fieldManager string) error {
	return applyStatusAt(ctx, c, obj, status, fieldManager, "")
}

// applyStatusAt is applyStatus conditional on resourceVersion (when set):
// for a status computed from what the object said, which must not
// overwrite a newer one.
func applyStatusAt(ctx context.Context, c client.Client, obj client.Object, status any, fieldManager, resourceVersion string) error {
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return err
	}
	gvk, err := c.GroupVersionKindFor(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": st}}
	u.SetGroupVersionKind(gvk)
	u.SetName(obj.GetName())
	u.SetUID(obj.GetUID())
	u.SetResourceVersion(resourceVersion)
	if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply status of %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

// setCondition sets a condition, bounding its message; its
// lastTransitionTime moves only when its status changes.
func setCondition(conds *[]metav1.Condition, gen int64, now time.Time, t string, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: s, Reason: reason, Message: text.Truncate(msg, maxConditionMessage),
		ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
}
