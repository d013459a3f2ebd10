package controllers

import (
	"context"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/index"
)

// Event mapping of the AccessPolicy controller: each event of a kind that
// resolution reads reaches only the policies it can concern.

// deviceAccessChanged passes Device changes resolution reads: spec, labels,
// reported facts, deletion.
func deviceAccessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(o.Status.Observed, n.Status.Observed) || n.DeletionTimestamp != nil
	}}
}

func requestAccessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.OnboardingRequest), e.ObjectNew.(*itmv1.OnboardingRequest)
		return access.InForce(o) != access.InForce(n) || !slices.Equal(o.Spec.Groups, n.Spec.Groups) ||
			o.Status.Phase != n.Status.Phase || !equality.Semantic.DeepEqual(o.Status.Accounts, n.Status.Accounts)
	}}
}

func namespaceChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Namespace), e.ObjectNew.(*corev1.Namespace)
		return !equality.Semantic.DeepEqual(o.Labels, n.Labels) || o.Status.Phase != n.Status.Phase ||
			(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
	}}
}

// policiesForDevice are the policies whose subjects can select the device:
// by its assignee, the assignee's groups, or a matching deviceSelector.
func (r *AccessPolicyReconciler) policiesForDevice(ctx context.Context, d *itmv1.Device) []itmv1.AccessPolicy {
	var keys []string
	if a := d.Spec.Assignee; a != "" {
		keys = append(keys, "user:"+a)
		req := &itmv1.OnboardingRequest{}
		if err := r.Get(ctx, types.NamespacedName{Name: a}, req); err == nil {
			for _, g := range req.Spec.Groups {
				keys = append(keys, "group:"+g)
			}
		}
	}
	keys = append(keys, index.KeyDeviceSelector)
	seen := map[string]bool{}
	var out []itmv1.AccessPolicy
	for _, k := range keys {
		list := &itmv1.AccessPolicyList{}
		if err := r.List(ctx, list, client.MatchingFields{index.PolicySubjectField: k}, client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		for _, p := range list.Items {
			if seen[p.Name] {
				continue
			}
			if k == index.KeyDeviceSelector {
				sel, err := access.Selector(p.Spec.Subjects)
				if err != nil || sel == nil || !sel.Matches(labels.Set(d.Labels)) {
					continue
				}
			}
			seen[p.Name] = true
			out = append(out, p)
		}
	}
	return out
}

func requestsFor(ps []itmv1.AccessPolicy) []reconcile.Request {
	out := make([]reconcile.Request, 0, len(ps))
	for _, p := range ps {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	}
	return out
}

// deviceToPolicies maps a Device to the policies that can select it, and to
// those of the Devices sharing one of its addresses (a conflict appearing
// or clearing changes their verdicts too). The handler maps both the old and
// the new object of an update, so a device leaving a policy reaches it.
func (r *AccessPolicyReconciler) deviceToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	ps := r.policiesForDevice(ctx, d)
	for _, addr := range device.Claims(d) {
		others, _ := OtherClaimants(r.claims, addr, d.Name)
		for _, name := range others {
			other := &itmv1.Device{}
			if err := r.Get(ctx, types.NamespacedName{Name: name}, other); err == nil {
				ps = append(ps, r.policiesForDevice(ctx, other)...)
			}
		}
	}
	return requestsFor(ps)
}

// deviceHandler maps Device events with deviceToPolicies, except an update
// of reported facts alone (access.ReportOnly): it reaches only the policies
// whose verdict on the device it changes. Agents report facts all the time
// that no policy looks at; at fleet scale, reconciling every policy of the
// device's owner for each would keep the queue full and delay the changes
// that matter.
func (r *AccessPolicyReconciler) deviceHandler() handler.EventHandler {
	mapped := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.observed(r.deviceToPolicies(ctx, o))
	})
	return handler.Funcs{
		CreateFunc: mapped.Create, DeleteFunc: mapped.Delete, GenericFunc: mapped.Generic,
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
			if !access.ReportOnly(o, n) {
				mapped.Update(ctx, e, q)
				return
			}
			for _, req := range r.observed(r.reportToPolicies(ctx, o, n)) {
				q.Add(req)
			}
		},
	}
}

// observed notes, for itmanager_access_propagation_seconds, that a change
// reaching reqs was observed now.
func (r *AccessPolicyReconciler) observed(reqs []reconcile.Request) []reconcile.Request {
	now := r.Clock.Now()
	for _, req := range reqs {
		r.pending.observe(req.Name, now)
	}
	return reqs
}

// reportToPolicies are the policies selecting a device whose verdict on it
// a ReportOnly update from old to cur changes, judged with its live
// check-in and conflicts; every policy selecting it when those cannot be
// read.
func (r *AccessPolicyReconciler) reportToPolicies(ctx context.Context, old, cur *itmv1.Device) []reconcile.Request {
	ps := r.policiesForDevice(ctx, cur)
	after := access.Candidate{Device: cur, AddressRanges: r.AddressRanges}
	var err error
	if after.LastCheckIn, err = RenewTime(ctx, r.Client, r.DevicesNamespace, cur); err == nil {
		after.Conflicts, err = AddressConflicts(r.claims, cur)
	}
	if err != nil {
		return requestsFor(ps)
	}
	before := after
	before.Device = old
	now := r.Clock.Now()
	return requestsFor(slices.DeleteFunc(ps, func(p itmv1.AccessPolicy) bool {
		return !access.VerdictChanged(before, after, p.Spec.Posture, now)
	}))
}

func (r *AccessPolicyReconciler) requestToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	req := o.(*itmv1.OnboardingRequest)
	keys := []string{"user:" + req.Name}
	for _, g := range req.Spec.Groups {
		keys = append(keys, "group:"+g)
	}
	return r.policiesByKeys(ctx, index.PolicySubjectField, keys)
}

func (r *AccessPolicyReconciler) namespaceToPolicies(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesByKeys(ctx, index.PolicyNamespaceField, []string{"ns:" + o.GetName(), index.KeyNamespaceSelector, index.KeyAllNamespaces})
}

func (r *AccessPolicyReconciler) policiesByKeys(ctx context.Context, index string, keys []string) []reconcile.Request {
	var out []reconcile.Request
	for _, k := range keys {
		list := &itmv1.AccessPolicyList{}
		if err := r.List(ctx, list, client.MatchingFields{index: k}, client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		out = append(out, requestsFor(list.Items)...)
	}
	return out
}

func (r *AccessPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &itmv1.AccessPolicyList{}
	if err := r.List(ctx, list); err != nil {
		return nil
	}
	return requestsFor(list.Items)
}

// leaseHandler maps a check-in to the policies whose verdict it changes: a
// renewal that makes the device fresh again under a policy's maxCheckInAge.
// Renewals of a device every policy already counts as fresh cost no
// reconcile; going stale is the policy's own requeue.
func (r *AccessPolicyReconciler) leaseHandler() handler.EventHandler {
	devices := func(ctx context.Context, l client.Object) []itmv1.Device {
		switch l.GetNamespace() {
		case r.DevicesNamespace:
			d := &itmv1.Device{}
			if err := r.Get(ctx, types.NamespacedName{Name: l.GetName()}, d); err != nil {
				return nil
			}
			return []itmv1.Device{*d}
		case device.NodeLeaseNamespace:
			list := &itmv1.DeviceList{}
			if err := r.List(ctx, list, client.MatchingFields{index.DeviceNodeNameField: l.GetName()}); err != nil {
				return nil
			}
			return list.Items
		}
		return nil
	}
	enqueue := func(ctx context.Context, l client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request], keep func(*itmv1.AccessPolicy) bool) {
		for _, d := range devices(ctx, l) {
			for _, p := range r.policiesForDevice(ctx, &d) {
				if p.Spec.Posture != nil && p.Spec.Posture.MaxCheckInAge != nil && keep(&p) {
					r.pending.observe(p.Name, r.Clock.Now())
					q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
				}
			}
		}
	}
	all := func(*itmv1.AccessPolicy) bool { return true }
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.Object.(*coordinationv1.Lease).Spec.RenewTime != nil {
				enqueue(ctx, e.Object, q, all)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q, all)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*coordinationv1.Lease), e.ObjectNew.(*coordinationv1.Lease)
			if equality.Semantic.DeepEqual(o.Spec.RenewTime, n.Spec.RenewTime) {
				return
			}
			now, before, after := r.Clock.Now(), renewTime(o), renewTime(n)
			flips := func(p *itmv1.AccessPolicy) bool {
				return access.CheckInFlips(before, after, p.Spec.Posture.MaxCheckInAge.Duration, now)
			}
			// The common renewal flips no verdict of any policy: say so from
			// one uncopied list, before looking up the device and whom it
			// concerns.
			if !r.anyPolicy(ctx, flips) {
				return
			}
			enqueue(ctx, n, q, flips)
		},
	}
}

// anyPolicy reports whether some AccessPolicy with maxCheckInAge satisfies
// keep (true when they cannot be listed, so nothing is missed).
func (r *AccessPolicyReconciler) anyPolicy(ctx context.Context, keep func(*itmv1.AccessPolicy) bool) bool {
	list := &itmv1.AccessPolicyList{}
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return true
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.Posture != nil && p.Spec.Posture.MaxCheckInAge != nil && keep(p) {
			return true
		}
	}
	return false
}

// renewTime is a Lease's renew time as a check-in (nil: none).
func renewTime(l *coordinationv1.Lease) *time.Time {
	if l.Spec.RenewTime == nil {
		return nil
	}
	return &l.Spec.RenewTime.Time
}
