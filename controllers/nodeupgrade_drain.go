package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/nodeupgrade"
)

// evictionDeadline bounds one eviction: the API server may hold an
// eviction while a budget's status is being computed, and a drain must not
// hold the worker for that long.
const evictionDeadline = 5 * time.Second

// drainPass is one pass's view of the node's pods: as the drain filters
// classified them, and the objects to evict.
type drainPass struct {
	pods []nodeupgrade.Pod
	objs map[string]*corev1.Pod
}

// drainPods lists the node's pods live (the manager does not cache the
// cluster's pods) and classifies each with the drain filters, as kubectl
// drain would, never forcing.
func (r *MaintenanceWindowReconciler) drainPods(ctx context.Context, mw *itmv1.MaintenanceWindow, node *corev1.Node) (*drainPass, error) {
	list := &corev1.PodList{}
	if err := r.APIReader.List(ctx, list, client.MatchingFields{"spec.nodeName": node.Name}); err != nil {
		return nil, fmt.Errorf("list pods on Node %s: %w", node.Name, err)
	}
	filters := nodeupgrade.Filters(nodeupgrade.DrainOptions{
		IgnoreDaemonSets:   mw.Spec.Drain.IgnoreDaemonSets == nil || *mw.Spec.Drain.IgnoreDaemonSets,
		DeleteEmptyDirData: mw.Spec.Drain.DeleteEmptyDirData,
		UpgradesNamespace:  r.upgradesNamespace(),
		DeviceLabel:        LabelUpgradeDevice,
	})
	pass := &drainPass{objs: make(map[string]*corev1.Pod, len(list.Items))}
	for i := range list.Items {
		p := &list.Items[i]
		dp := nodeupgrade.Pod{Namespace: p.Namespace, Name: p.Name, Verdict: nodeupgrade.Classify(p, filters)}
		pass.pods = append(pass.pods, dp)
		pass.objs[dp.Key()] = p
	}
	return pass, nil
}

// evict sends one eviction per pod through the Eviction API (PDBs
// respected) and records each outcome in pods (the facts): a refused one
// with the budgets that cover it.
func (r *MaintenanceWindowReconciler) evict(ctx context.Context, d *drainPass, evict, pods []nodeupgrade.Pod) error {
	for _, e := range evict {
		p := d.objs[e.Key()]
		evictCtx, cancel := context.WithTimeout(ctx, evictionDeadline)
		err := r.SubResource("eviction").Create(evictCtx, p, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}})
		cancel()
		outcome, err := nodeupgrade.EvictionResult(err)
		if err != nil {
			return fmt.Errorf("evict pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		var budgets []string
		if outcome == nodeupgrade.Refused {
			pdbs := &policyv1.PodDisruptionBudgetList{}
			if err := r.APIReader.List(ctx, pdbs, client.InNamespace(p.Namespace)); err == nil {
				budgets = nodeupgrade.CoveringBudgets(p, pdbs.Items)
			}
		}
		for i := range pods {
			if pods[i].Key() == e.Key() {
				pods[i].Eviction, pods[i].Budgets = outcome, budgets
			}
		}
	}
	return nil
}
