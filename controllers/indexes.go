// Package controllers holds the reconcilers: thin I/O glue around the pure
// packages under internal/.
package controllers

import (
	"context"
	"slices"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Field indexes over Devices, so an event on a Node, a Lease or another
// Device enqueues only the Devices it concerns.
const (
	// IndexDeviceNodeName indexes Devices by spec.nodeName.
	IndexDeviceNodeName = "spec.nodeName"
	// IndexDeviceAddress indexes Active Devices by every address they claim
	// (static and observed).
	IndexDeviceAddress = "address"
)

// SetupIndexes registers the field indexes the controllers use.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &itmv1.Device{}, IndexDeviceNodeName, func(o client.Object) []string {
		if n := o.(*itmv1.Device).Spec.NodeName; n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &itmv1.Device{}, IndexDeviceAddress, func(o client.Object) []string {
		return DeviceAddresses(o.(*itmv1.Device))
	})
}

// DeviceAddresses are the addresses an Active Device claims: its static ones
// and those it reported, deduplicated and sorted. Retired and Lost devices
// claim none (they never get access).
func DeviceAddresses(d *itmv1.Device) []string {
	if d.Spec.Lifecycle == itmv1.DeviceLifecycleRetired || d.Spec.Lifecycle == itmv1.DeviceLifecycleLost {
		return nil
	}
	out := slices.Clone(d.Spec.Addresses)
	if d.Status.Observed != nil {
		out = append(out, d.Status.Observed.Addresses...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
