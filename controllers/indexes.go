// Package controllers holds the reconcilers: thin I/O glue around the pure
// packages under internal/.
package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/itmanager-io/itmanager/internal/index"
)

// SetupIndexes registers the field indexes the controllers use (named, and
// their keys built, in internal/index).
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	return index.Setup(ctx, mgr.GetFieldIndexer())
}
