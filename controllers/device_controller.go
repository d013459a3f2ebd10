package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/device/news"
	"github.com/itmanager-io/itmanager/internal/index"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// DeviceFieldManager names the Device controller's status writes.
const DeviceFieldManager = "itmanager-device"

// DeviceReconciler derives a Device's status: phase, CheckedIn from its
// Lease, UpToDate, Ready, and for Node devices the observed facts of the
// Node. It requeues for the instant a device's check-in goes stale; it never
// polls the fleet.
type DeviceReconciler struct {
	client.Client
	// Workers is the number of concurrent reconciles (default 1).
	Workers  int
	Clock    clock.PassiveClock
	Recorder recorder.EventRecorder
	// DevicesNamespace holds the agents' Leases.
	DevicesNamespace string
	// StaleAfter is the CheckedIn threshold.
	StaleAfter time.Duration
	// RefreshEvery bounds how often status.lastCheckIn is rewritten.
	RefreshEvery time.Duration
	// AddressRanges are the manager's --agent-address-cidrs (empty: any).
	AddressRanges []netip.Prefix

	status     *kit.Status
	statusOnce sync.Once
	// claims answers which Devices claim an address.
	claims *index.Claims
}

// writer is the controller's one status writer. The check-in service and
// the upgrade steps write a Device's status too: a merge patch under an
// optimistic lock (Shared), never an apply of a stale copy.
func (r *DeviceReconciler) writer() *kit.Status {
	r.statusOnce.Do(func() { r.status = &kit.Status{Client: r.Client, FieldManager: DeviceFieldManager, Shared: true} })
	return r.status
}

// The onboarding controller sets and clears spec.assignee, which the Device
// admission policy (config/admission/device.yaml) allows only with "assign".
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=assign
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=kube-node-lease,resources=leases,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=itmanager-devices,resources=leases,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=itmanager-devices,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile computes one Device's status and writes it when it changed.
func (r *DeviceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	dev := &itmv1.Device{}
	if err := r.Get(ctx, req.NamespacedName, dev); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log := ctrl.LoggerFrom(ctx).WithValues("Device", klog.KObj(dev))
	if dev.DeletionTimestamp != nil {
		r.writer().Forget(dev)
		return ctrl.Result{}, nil
	}

	in := device.Input{Device: dev, Now: r.Clock.Now(), StaleAfter: r.StaleAfter, RefreshEvery: r.RefreshEvery, AddressRanges: r.AddressRanges}
	var err error
	if in.RenewTime, err = RenewTime(ctx, r.Client, r.DevicesNamespace, dev); err != nil {
		return ctrl.Result{}, err
	}
	if dev.Spec.Class == itmv1.DeviceClassNode {
		node := &corev1.Node{}
		switch err := r.Get(ctx, types.NamespacedName{Name: dev.Spec.NodeName}, node); {
		case err == nil && device.OwnedByNode(dev, node):
			in.NodeFacts = device.NodeFacts(node)
		case err == nil:
			// Only the Device discovery made for this Node (its ownership
			// mark, with the Node's UID) mirrors it: one that merely names
			// the Node, or was made for an earlier Node of that name,
			// never gets its addresses. Discovery reports the conflict.
		case !apierrors.IsNotFound(err):
			return ctrl.Result{}, err
		}
	}
	if in.Conflicts, err = AddressConflicts(r.claims, dev); err != nil {
		return ctrl.Result{}, err
	}
	if in.Unenrolled, in.EnrolmentConflict, err = AgentEnrolment(ctx, r.Client, r.DevicesNamespace, dev); err != nil {
		return ctrl.Result{}, err
	}

	res := device.Evaluate(in)
	base := dev.DeepCopy()
	dev.Status = res.Status
	sent, err := r.writer().Write(ctx, base, dev)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("patch status of Device %s: %w", dev.Name, err)
	}
	if sent {
		was, is := news.Of(&base.Status, &dev.Status)
		kit.Emitter{Recorder: r.Recorder}.Changes(dev, was, is, news.Watches...)
		log.V(1).Info("Updated device status", "phase", dev.Status.Phase)
	}
	// The requeue is the instant the device would go stale: it goes ahead
	// of routine work (a bulk import, resyncs), so access is withdrawn on
	// time even while the controller is busy.
	if res.RequeueAfter <= 0 {
		return ctrl.Result{}, nil
	}
	return kit.Urgent(kit.After(res.RequeueAfter)), nil
}

// SetupWithManager watches Devices, their Leases, Nodes, Devices that
// share an address, and (metadata of) enrolment Secrets.
func (r *DeviceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// The status memo is keyed by UID, which a NotFound no longer tells.
	forgetStatus := r.writer().ForgetOnDelete()
	var err error
	if r.claims, err = index.ClaimsOf(context.Background(), mgr.GetCache()); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("device").
		For(&itmv1.Device{}, builder.WithPredicates(forgetStatus, deviceInputsChanged())).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(r.devicesSharingAddresses),
			builder.WithPredicates(addressesChanged())).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.leaseToDevices),
			builder.WithPredicates(r.freshnessChanged())).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeToDevices),
			builder.WithPredicates(nodeFactsChanged())).
		// An enrolment Secret appearing, going or changing hands decides
		// Ready (enrolled, awaiting enrolment, or Stalled by someone
		// else's Secret).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return enrolmentSecretDevice(r.DevicesNamespace, o)
		}), builder.OnlyMetadata, builder.WithPredicates(createOrDelete())).
		Complete(r)
}

// deviceInputsChanged passes what the status depends on (spec, reported
// facts, deletion), not the controller's own status writes nor upgrade
// progress, which the derived status does not read.
func deviceInputsChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Status.Observed, n.Status.Observed) ||
			n.DeletionTimestamp != nil
	}}
}

func addressesChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !slices.Equal(device.Claims(e.ObjectOld.(*itmv1.Device)), device.Claims(e.ObjectNew.(*itmv1.Device)))
	}}
}

func (r *DeviceReconciler) devicesSharingAddresses(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, addr := range device.Claims(o.(*itmv1.Device)) {
		// On a lookup error those Devices still get their own next reconcile.
		others, _ := OtherClaimants(r.claims, addr, o.GetName())
		for _, name := range others {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
		}
	}
	return reqs
}

// freshnessChanged passes a Lease renewal only when it changes a freshness
// verdict: a device that was stale (or never checked in) is fresh again.
// Renewals of an already fresh device change nothing and cost nothing; the
// controller is already requeued for the instant the device would go stale.
// A token hash that appears or goes changes whether the agent is enrolled
// (Ready).
func (r *DeviceReconciler) freshnessChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*coordinationv1.Lease), e.ObjectNew.(*coordinationv1.Lease)
		if (o.Annotations[checkin.AnnotationTokenHash] == "") != (n.Annotations[checkin.AnnotationTokenHash] == "") {
			return true
		}
		if n.Spec.RenewTime == nil {
			return o.Spec.RenewTime != nil
		}
		if o.Spec.RenewTime == nil {
			return true
		}
		return !device.Fresh(&o.Spec.RenewTime.Time, r.StaleAfter, r.Clock.Now()) || n.Spec.RenewTime.Before(o.Spec.RenewTime)
	}}
}

func (r *DeviceReconciler) leaseToDevices(ctx context.Context, o client.Object) []reconcile.Request {
	switch o.GetNamespace() {
	case r.DevicesNamespace:
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
	case device.NodeLeaseNamespace:
		return r.devicesOfNode(ctx, o.GetName())
	}
	return nil
}

func (r *DeviceReconciler) nodeToDevices(ctx context.Context, o client.Object) []reconcile.Request {
	return r.devicesOfNode(ctx, o.GetName())
}

func (r *DeviceReconciler) devicesOfNode(ctx context.Context, node string) []reconcile.Request {
	list := &itmv1.DeviceList{}
	if err := r.List(ctx, list, index.DevicesOnNode(node)); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, d := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: d.Name}})
	}
	return reqs
}

// nodeFactsChanged passes Node updates that change a Device's observed facts,
// not the kubelet's frequent status heartbeats.
func nodeFactsChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !equality.Semantic.DeepEqual(device.NodeFacts(e.ObjectOld.(*corev1.Node)), device.NodeFacts(e.ObjectNew.(*corev1.Node)))
	}}
}
