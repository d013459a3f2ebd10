// Package controllers holds the reconcilers: thin I/O glue around the pure
// packages under internal/.
package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/itmanager-io/itmanager/internal/index"
)

// SetupIndexes registers the field indexes the controllers use (named, and
// their keys built, in internal/index), and the Device informer's index of
// claimed addresses (index.Claims).
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	if err := index.Setup(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	_, err := index.ClaimsOf(ctx, mgr.GetCache())
	return err
}
