package device

import (
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// NodeLeaseNamespace holds the kubelets' Leases.
const NodeLeaseNamespace = "kube-node-lease"

// LeaseKey is the Lease whose renew time is the device's check-in: its agent
// Lease in devicesNamespace, or for a Node device its Node's Lease. ok is
// false for a device that does not check in, and for a Node device that
// discovery did not make (no ownership mark): a Device that merely names a
// Node never borrows its kubelet's check-ins.
func LeaseKey(devicesNamespace string, d *itmv1.Device) (key types.NamespacedName, ok bool) {
	if d.Spec.Class == itmv1.DeviceClassNode {
		return types.NamespacedName{Namespace: NodeLeaseNamespace, Name: d.Spec.NodeName}, MirrorsNode(d)
	}
	if d.Spec.Agent == nil || !d.Spec.Agent.Enabled {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: devicesNamespace, Name: d.Name}, true
}
