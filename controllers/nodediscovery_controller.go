package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/names"
)

// NodeDiscoveryFieldManager owns spec.class and spec.nodeName of discovered
// Devices, and nothing else: users own every other field.
const NodeDiscoveryFieldManager = "itmanager-node-discovery"

// DefaultConflictRecheck is how often discovery looks again at (and
// reports again) a Node whose Device name is taken.
const DefaultConflictRecheck = 5 * time.Minute

// nodeDeviceConflicts is 1 for each Node whose Device name is held by a
// Device discovery did not create.
var nodeDeviceConflicts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "itmanager_nodediscovery_name_conflicts",
	Help: "1 for each Node whose Device name (node-<node>) is held by a Device Node discovery did not create; that Node has no Device until the other Device is deleted.",
}, []string{"node"})

func init() { ctrlmetrics.Registry.MustRegister(nodeDeviceConflicts) }

// NodeDiscoveryReconciler gives every Node a Device node-<node name> of class
// Node, owned by the Node so it is garbage-collected with it. It never adopts
// a Device of that name that it did not create (DESIGN §2): such a Device
// keeps its class, nodeName and facts, and discovery reports it.
type NodeDiscoveryReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// Workers is the number of concurrent reconciles (default 1).
	Workers int
	// ConflictRecheck is how often a taken name is looked at and reported
	// again while the conflict lasts (default DefaultConflictRecheck).
	ConflictRecheck time.Duration
}

// Discovery labels the Devices it creates (app.kubernetes.io/managed-by),
// which the Device admission policy allows only with "assign".
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch;create;patch;assign
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile creates, or keeps, the Device of one Node.
func (r *NodeDiscoveryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Get(ctx, req.NamespacedName, node); err != nil {
		if apierrors.IsNotFound(err) {
			nodeDeviceConflicts.DeleteLabelValues(req.Name)
		}
		// A deleted Node's Device goes with it through its owner reference.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if node.DeletionTimestamp != nil {
		nodeDeviceConflicts.DeleteLabelValues(node.Name)
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("Node", klog.KObj(node))
	name := names.NodeDevice(node.Name)
	dev := &itmv1.Device{}
	switch err := r.Get(ctx, types.NamespacedName{Name: name}, dev); {
	case apierrors.IsNotFound(err):
		nodeDeviceConflicts.DeleteLabelValues(node.Name)
		return ctrl.Result{}, r.create(ctx, node, name)
	case err != nil:
		return ctrl.Result{}, err
	case device.OwnedByNode(dev, node):
		nodeDeviceConflicts.DeleteLabelValues(node.Name)
		if err := r.handOver(ctx, node, dev); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.reassert(ctx, node, dev)
	case ownedByEarlierNode(dev, node):
		// Made for an earlier Node of this name: the garbage collector
		// deletes it, and its deletion brings this Node back here (Owns).
		log.V(1).Info("Waiting for the Device of an earlier Node of this name to be garbage-collected", "Device", klog.KObj(dev))
		return kit.After(time.Minute), nil
	default:
		r.reportConflict(ctx, node, dev)
		return kit.After(cmp.Or(r.ConflictRecheck, DefaultConflictRecheck)), nil
	}
}

// create makes the Node's Device. It is a create, never an apply: an apply
// would take over a Device someone made under this name in the meantime.
func (r *NodeDiscoveryReconciler) create(ctx context.Context, node *corev1.Node, name string) error {
	dev := &itmv1.Device{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Labels:          map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue},
			OwnerReferences: []metav1.OwnerReference{nodeOwnerRef(node)},
		},
		Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassNode, NodeName: node.Name},
	}
	if err := r.Create(ctx, dev, client.FieldOwner(NodeDiscoveryFieldManager)); err != nil {
		// AlreadyExists: someone was faster; the next reconcile reads it.
		return fmt.Errorf("create Device %s for Node %s: %w", name, node.Name, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Created Node device", "Node", klog.KObj(node), "Device", klog.KObj(dev))
	return nil
}

// handOver turns the field ownership of discovery's create into the apply
// entry an apply would have made. A create owns every field it set,
// defaults included (spec.lifecycle), and a user's server-side apply of
// such a field would conflict with discovery; an apply entry owns exactly
// the class, nodeName, label and owner reference. Conditional on the Device
// read, so another manager's entry written meanwhile is never lost (a
// conflict retries).
func (r *NodeDiscoveryReconciler) handOver(ctx context.Context, node *corev1.Node, dev *itmv1.Device) error {
	created := func(e metav1.ManagedFieldsEntry) bool {
		return e.Manager == NodeDiscoveryFieldManager && e.Operation == metav1.ManagedFieldsOperationUpdate && e.Subresource == ""
	}
	if !slices.ContainsFunc(dev.ManagedFields, created) {
		return nil
	}
	owned, err := json.Marshal(map[string]any{
		"f:metadata": map[string]any{
			"f:labels":          map[string]any{"f:" + itmv1.LabelManagedBy: map[string]any{}},
			"f:ownerReferences": map[string]any{fmt.Sprintf(`k:{"uid":%q}`, node.UID): map[string]any{}},
		},
		"f:spec": map[string]any{"f:class": map[string]any{}, "f:nodeName": map[string]any{}},
	})
	if err != nil {
		return err
	}
	base := dev.DeepCopy()
	dev.ManagedFields = slices.DeleteFunc(slices.Clone(dev.ManagedFields), func(e metav1.ManagedFieldsEntry) bool {
		return created(e) || (e.Manager == NodeDiscoveryFieldManager && e.Subresource == "")
	})
	dev.ManagedFields = append(dev.ManagedFields, metav1.ManagedFieldsEntry{
		Manager: NodeDiscoveryFieldManager, Operation: metav1.ManagedFieldsOperationApply,
		APIVersion: itmv1.GroupVersion.String(), Time: ptr.To(metav1.Now()),
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(string(owned)),
	})
	if err := r.Patch(ctx, dev, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}), client.FieldOwner(NodeDiscoveryFieldManager)); err != nil {
		return fmt.Errorf("hand over field ownership of Device %s: %w", dev.Name, err)
	}
	return nil
}

// reassert puts back spec.class and spec.nodeName of the Node's own Device
// when someone changed them, by server-side apply of exactly the fields this
// manager owns, so a user's labels, spec.os.targetVersion and the like stay.
// The apply is conditional on the Device read (its UID through its
// resourceVersion), so it can only ever touch the Device discovery made.
func (r *NodeDiscoveryReconciler) reassert(ctx context.Context, node *corev1.Node, dev *itmv1.Device) error {
	if dev.Spec.Class == itmv1.DeviceClassNode && dev.Spec.NodeName == node.Name && dev.Labels[itmv1.LabelManagedBy] == itmv1.ManagedByValue {
		return nil
	}
	ref := nodeOwnerRef(node)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": itmv1.GroupVersion.String(),
		"kind":       "Device",
		"metadata": map[string]any{
			"name":            dev.Name,
			"resourceVersion": dev.ResourceVersion,
			"labels":          map[string]any{itmv1.LabelManagedBy: itmv1.ManagedByValue},
			"ownerReferences": []any{map[string]any{
				"apiVersion": ref.APIVersion, "kind": ref.Kind, "name": ref.Name, "uid": string(ref.UID), "controller": true,
			}},
		},
		"spec": map[string]any{
			"class":    string(itmv1.DeviceClassNode),
			"nodeName": node.Name,
		},
	}}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(NodeDiscoveryFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply Device %s for Node %s: %w", dev.Name, node.Name, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Restored Node device", "Node", klog.KObj(node), "Device", klog.KObj(dev))
	return nil
}

// reportConflict says, on the Device and in the log and metrics, that the
// Node's Device name is taken by a Device discovery did not create. It runs
// again every ConflictRecheck while the conflict lasts (the Event becomes a
// series).
func (r *NodeDiscoveryReconciler) reportConflict(ctx context.Context, node *corev1.Node, dev *itmv1.Device) {
	ctrl.LoggerFrom(ctx).Info("Not adopting a Device that Node discovery did not create; the Node has no Device until it is deleted",
		"Node", klog.KObj(node), "Device", klog.KObj(dev), "class", dev.Spec.Class)
	nodeDeviceConflicts.WithLabelValues(node.Name).Set(1)
	kit.Emitter{Recorder: r.Recorder}.Eventf(dev, node, corev1.EventTypeWarning, itmv1.ReasonNodeDeviceNameTaken, "Discover",
		"Device %s is named for Node %s but Node discovery did not create it (no owner reference to that Node and its UID): it is never adopted, so the Node's class, facts and addresses never reach it, and the Node has no Device until this one is deleted",
		dev.Name, node.Name)
}

func nodeOwnerRef(node *corev1.Node) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptr.To(true)}
}

// ownedByEarlierNode reports whether dev carries discovery's mark for a Node
// of node's name but another UID.
func ownedByEarlierNode(dev *itmv1.Device, node *corev1.Node) bool {
	ref := device.NodeOwner(dev)
	return ref != nil && ref.Name == node.Name && ref.UID != node.UID
}

// SetupWithManager watches Nodes (creation and deletion only: nothing else of
// a Node changes what this controller applies), the Devices it created, and
// the deletion of any Device named like a Node's, so a Node whose name was
// taken gets its Device as soon as the name is free.
func (r *NodeDiscoveryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("nodediscovery").
		For(&corev1.Node{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return e.ObjectOld.GetUID() != e.ObjectNew.GetUID() },
		})).
		Owns(&itmv1.Device{}, builder.WithPredicates(predicate.Funcs{
			// Re-apply when someone deletes a discovered Device or takes
			// its fields; other changes are the users' to make.
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
				return o.Spec.Class != n.Spec.Class || o.Spec.NodeName != n.Spec.NodeName
			},
		})).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(nodeNamedBy), builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Complete(r)
}

// nodeNamedBy maps a deleted Device named node-<x> to Node x. Names that
// discovery shortened with a hash do not map back; ConflictRecheck covers
// those.
func nodeNamedBy(_ context.Context, o client.Object) []reconcile.Request {
	node, ok := strings.CutPrefix(o.GetName(), "node-")
	if !ok || names.NodeDevice(node) != o.GetName() {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: node}}}
}
