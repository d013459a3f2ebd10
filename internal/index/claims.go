package index

import (
	"context"
	"fmt"
	"slices"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/device"
)

// claimsIndex is the name of the Device informer's own index of claimed
// addresses.
const claimsIndex = "itmanager.io/claims"

// Claims answers which Devices claim an address, from an index the Device
// informer keeps itself: only names are read, no object is listed or
// copied. Every policy reconcile asks it once per address of each of its
// devices (thousands of times at fleet scale); a field-indexed List per
// address cost a fifth of the manager's CPU under churn.
type Claims struct {
	indexer toolscache.Indexer
}

// ClaimsOf returns the Claims of the Device informer of c, adding the
// index to it the first time (before the cache starts, like a field index).
func ClaimsOf(ctx context.Context, c cache.Informers) (*Claims, error) {
	inf, err := c.GetInformer(ctx, &itmv1.Device{})
	if err != nil {
		return nil, err
	}
	sii, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("the Device informer is a %T, not a shared index informer", inf)
	}
	if _, ok := sii.GetIndexer().GetIndexers()[claimsIndex]; !ok {
		if err := sii.AddIndexers(toolscache.Indexers{claimsIndex: claimKeys}); err != nil {
			return nil, fmt.Errorf("index the Devices by claimed address: %w", err)
		}
	}
	return &Claims{indexer: sii.GetIndexer()}, nil
}

// claimKeys are the addresses a Device claims (device.Claims: none unless
// it is Active), in their canonical spelling.
func claimKeys(obj any) ([]string, error) {
	d, ok := obj.(*itmv1.Device)
	if !ok {
		return nil, nil
	}
	return device.Claims(d), nil
}

// Claimants are the sorted names of the Devices that claim addr (in its
// device.Canonical spelling).
func (c *Claims) Claimants(addr string) ([]string, error) {
	keys, err := c.indexer.IndexKeys(claimsIndex, addr)
	if err != nil {
		return nil, err
	}
	// Devices are cluster-scoped: a store key is the name.
	slices.Sort(keys)
	return keys, nil
}
