package webhook

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// A window whose stored spec the validator refuses (stored before a rule
// existed) must still take metadata writes, above all the removal of its
// finalizer, or it could never be deleted; a spec change is checked.
func TestValidateUpdateChecksOnlyAChangedSpec(t *testing.T) {
	bad := &itmv1.MaintenanceWindow{ObjectMeta: metav1.ObjectMeta{Name: "w", Finalizers: []string{"itmanager.io/release-upgrade-claims"}},
		Spec: itmv1.MaintenanceWindowSpec{TimeZone: "Mars/Olympus_Mons", Windows: []itmv1.Window{{Schedule: "0 2 * * *"}}}}
	if errs := ValidateMaintenanceWindow(bad); len(errs) == 0 {
		t.Fatal("precondition: the spec should be invalid")
	}
	unfinalized := bad.DeepCopy()
	unfinalized.Finalizers = nil
	v := &MaintenanceWindowValidator{}
	if _, err := v.ValidateUpdate(context.Background(), bad, unfinalized); err != nil {
		t.Fatalf("removing the finalizer of a window with an invalid stored spec was refused: %v", err)
	}
	changed := bad.DeepCopy()
	changed.Spec.Windows[0].Schedule = "0 3 * * *"
	if _, err := v.ValidateUpdate(context.Background(), bad, changed); err == nil {
		t.Fatal("a changed spec that is still invalid was admitted")
	}
	fixed := bad.DeepCopy()
	fixed.Spec.TimeZone = "Europe/Berlin"
	if _, err := v.ValidateUpdate(context.Background(), bad, fixed); err != nil {
		t.Fatalf("a spec change that fixes the window was refused: %v", err)
	}
}
