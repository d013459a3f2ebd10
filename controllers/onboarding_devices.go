package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/index"
	"github.com/itmanager-io/itmanager/internal/onboarding"
)

// syncDevices assigns and releases devices per the plan. An assignment
// applies spec.assignee with the resourceVersion of the read that saw the
// device unassigned: a conflict means someone else won, and the next pass
// picks again.
func (r *OnboardingReconciler) syncDevices(ctx context.Context, o *itmv1.OnboardingRequest, stage onboarding.Stage, ps *onboarding.Pass) error {
	if (stage == onboarding.Active || stage == onboarding.Scheduled) && len(o.Spec.Devices) == 0 && len(o.Status.Devices) == 0 {
		return nil
	}
	// The person's own devices first (an index lookup): when they satisfy
	// every request, the plan over the whole inventory is the same plan,
	// since only a request that none of them satisfies looks further. Only
	// then is the inventory listed, uncopied (nothing here modifies it): a
	// copy of 10,000 Devices per reconcile of each Active person made the
	// manager's memory peak while periodic provider checks requeued them.
	var list itmv1.DeviceList
	if err := r.List(ctx, &list, client.MatchingFields{index.DeviceAssigneeField: o.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	plan := onboarding.Devices(o.Name, o.Spec.Devices, o.Status.Devices, list.Items, stage)
	if len(plan.Assign) > 0 || len(plan.Unmet) > 0 {
		if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return err
		}
		plan = onboarding.Devices(o.Name, o.Spec.Devices, o.Status.Devices, list.Items, stage)
	}
	byName := map[string]*itmv1.Device{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	ps.Devices = append(ps.Devices, plan.Keep...)
	ps.Unmet = plan.Unmet
	log := logf.FromContext(ctx)
	for _, a := range plan.Assign {
		_, err := r.applyAssignee(ctx, byName[a.Device], o.Name)
		switch {
		case err == nil:
			ps.Devices = append(ps.Devices, a.Device)
			r.events().Eventf(o, byName[a.Device], corev1.EventTypeNormal, eventDeviceAssigned, "Assign", "Device %s assigned for spec.devices[%d]", a.Device, a.Index)
		case apierrors.IsConflict(err):
			log.V(1).Info("Device assignment lost a race; picking again", "device", a.Device)
			ps.AssignRetry = true
			ps.Unmet = append(ps.Unmet, fmt.Sprintf("spec.devices[%d]: Device %s was taken concurrently; picking again", a.Index, a.Device))
		default:
			return fmt.Errorf("assign Device %s: %w", a.Device, err)
		}
	}
	for _, name := range plan.Release {
		still, err := r.applyAssignee(ctx, byName[name], "")
		if err != nil {
			if apierrors.IsConflict(err) {
				ps.AssignRetry = true
				ps.Devices = append(ps.Devices, name)
				continue
			}
			return fmt.Errorf("release Device %s: %w", name, err)
		}
		if still == o.Name {
			// Another field manager (a GitOps tool, kubectl apply) holds
			// spec.assignee: only it can let go.
			ps.Devices = append(ps.Devices, name)
			ps.Held = append(ps.Held, fmt.Sprintf("Device %s: spec.assignee is set by another field manager (GitOps, kubectl apply); remove it there", name))
			continue
		}
		r.events().Eventf(o, byName[name], corev1.EventTypeNormal, eventDeviceReleased, "Release", "Device %s unassigned", name)
	}
	slices.Sort(ps.Devices)
	ps.Devices = slices.Compact(ps.Devices)
	return nil
}

// applyAssignee applies (or, with "", gives up) spec.assignee of d under
// AssignFieldManager, conditional on the resourceVersion read, and returns
// the assignee the Device has afterwards.
func (r *OnboardingReconciler) applyAssignee(ctx context.Context, d *itmv1.Device, assignee string) (string, error) {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("Device"))
	u.SetName(d.Name)
	u.SetResourceVersion(d.ResourceVersion)
	if assignee != "" {
		u.Object["spec"] = map[string]any{"assignee": assignee}
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(AssignFieldManager)); err != nil {
		return "", err
	}
	after, _, _ := unstructured.NestedString(u.Object, "spec", "assignee")
	return after, nil
}
