package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
)

// CacheByObject narrows the manager's cache to what the controllers need
// and the RBAC grants: Leases only in the devices' and the kubelets'
// namespaces, Secrets only in the devices' namespace (and only their
// metadata is ever read), Jobs only in the upgrades namespace, and of
// NetworkPolicies, bindings and Jobs only those itmanager generated; the
// cluster's others are none of its business. Pods are never cached: a
// node's are listed live while it drains.
func CacheByObject(devicesNamespace, upgradesNamespace string) map[client.Object]cache.ByObject {
	generated := labels.SelectorFromSet(labels.Set{itmv1.LabelManagedBy: itmv1.ManagedByValue})
	return map[client.Object]cache.ByObject{
		&coordinationv1.Lease{}:       {Namespaces: map[string]cache.Config{devicesNamespace: {}, device.NodeLeaseNamespace: {}}},
		&corev1.Secret{}:              {Namespaces: map[string]cache.Config{devicesNamespace: {}}},
		&networkingv1.NetworkPolicy{}: {Label: generated},
		&rbacv1.RoleBinding{}:         {Label: generated},
		&rbacv1.ClusterRoleBinding{}:  {Label: generated},
		// Node upgrade Jobs run only in the upgrades namespace.
		&batchv1.Job{}: {Namespaces: map[string]cache.Config{upgradesNamespace: {}}, Label: generated},
	}
}
