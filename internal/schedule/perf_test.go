package schedule

import (
	"testing"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

func BenchmarkAlwaysOpen(b *testing.B) {
	s := mustSchedule(b, "Europe/Berlin", []itmv1.Window{win("* * * * *", time.Hour)})
	now := utc("2026-06-01T10:00:00Z")
	for b.Loop() {
		s.At(now) // what a MaintenanceWindow reconcile asks
	}
}
