package controllers

import (
	"context"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/index"
)

// Lookups shared by the Device and AccessPolicy controllers: both judge a
// device by the same live facts.

// RenewTime is the device's live check-in; nil when it never checked in.
func RenewTime(ctx context.Context, c client.Reader, devicesNamespace string, dev *itmv1.Device) (*time.Time, error) {
	key, ok := device.LeaseKey(devicesNamespace, dev)
	if !ok {
		return nil, nil
	}
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, key, lease); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if lease.Spec.RenewTime == nil {
		return nil, nil
	}
	return &lease.Spec.RenewTime.Time, nil
}

// AddressConflicts maps each of the device's addresses that other Devices
// claim too to those Devices' sorted names.
func AddressConflicts(ctx context.Context, c client.Reader, dev *itmv1.Device) (map[string][]string, error) {
	var out map[string][]string
	for _, addr := range device.Claims(dev) {
		others, err := OtherClaimants(ctx, c, addr, dev.Name)
		if err != nil {
			return nil, err
		}
		if len(others) > 0 {
			if out == nil {
				out = map[string][]string{}
			}
			out[addr] = others
		}
	}
	return out, nil
}

// OtherClaimants are the sorted names of the Devices other than self that
// claim addr.
func OtherClaimants(ctx context.Context, c client.Reader, addr, self string) ([]string, error) {
	list := &itmv1.DeviceList{}
	if err := c.List(ctx, list, index.DevicesClaiming(addr), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range list.Items {
		if d.Name != self {
			names = append(names, d.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}
