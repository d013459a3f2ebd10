package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/names"
)

// NodeDiscoveryFieldManager owns spec.class and spec.nodeName of discovered
// Devices, and nothing else: users own every other field.
const NodeDiscoveryFieldManager = "itmanager-node-discovery"

// NodeDiscoveryReconciler gives every Node a Device node-<node name> of class
// Node, owned by the Node so it is garbage-collected with it.
type NodeDiscoveryReconciler struct {
	client.Client
	// Workers is the number of concurrent reconciles (default 1).
	Workers int
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch;create;patch

// Reconcile applies the Device of one Node.
func (r *NodeDiscoveryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Get(ctx, req.NamespacedName, node); err != nil {
		// A deleted Node's Device goes with it through its owner reference.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if node.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	name := names.NodeDevice(node.Name)
	// Server-side apply of exactly the fields this manager owns, so a user's
	// labels, spec.os.targetVersion and the like stay. The owner reference
	// carries the Node's UID: a later Node of the same name does not inherit
	// a Device made for an earlier one.
	dev := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": itmv1.GroupVersion.String(),
		"kind":       "Device",
		"metadata": map[string]any{
			"name":   name,
			"labels": map[string]any{itmv1.LabelManagedBy: itmv1.ManagedByValue},
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Node", "name": node.Name, "uid": string(node.UID), "controller": true,
			}},
		},
		"spec": map[string]any{
			"class":    string(itmv1.DeviceClassNode),
			"nodeName": node.Name,
		},
	}}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(dev), client.FieldOwner(NodeDiscoveryFieldManager), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("apply Device %s for Node %s: %w", name, node.Name, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Applied Node device", "Node", klog.KObj(node), "device", name)
	return ctrl.Result{}, nil
}

// SetupWithManager watches Nodes (creation and deletion only: nothing else of
// a Node changes what this controller applies) and the Devices it applied.
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
		Complete(r)
}
