// Package webhook holds the admission checks that CEL cannot express: cron
// syntax and IANA time zones of MaintenanceWindows. Everything CEL can
// express lives in the CRD schema instead.
package webhook

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/schedule"
)

// MaintenanceWindowValidator rejects MaintenanceWindows whose schedules or
// time zone cannot be evaluated.
type MaintenanceWindowValidator struct{}

// The webhook's name is what the API server quotes when it cannot reach
// the manager (failurePolicy Fail: no unchecked schedule gets in), so it
// says who checks what: `failed calling webhook
// "maintenancewindow-schedules.checked-by-the-itmanager-manager.itmanager.io":
// failed to call webhook: Post "https://itmanager-webhook...": <why>`.
// +kubebuilder:webhook:path=/validate-itmanager-io-v1alpha1-maintenancewindow,mutating=false,failurePolicy=fail,sideEffects=None,groups=itmanager.io,resources=maintenancewindows,verbs=create;update,versions=v1alpha1,name=maintenancewindow-schedules.checked-by-the-itmanager-manager.itmanager.io,admissionReviewVersions=v1,timeoutSeconds=5

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *MaintenanceWindowValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &itmv1.MaintenanceWindow{}).WithValidator(v).Complete()
}

var _ admission.Validator[*itmv1.MaintenanceWindow] = &MaintenanceWindowValidator{}

// ValidateCreate checks a new MaintenanceWindow.
func (v *MaintenanceWindowValidator) ValidateCreate(_ context.Context, mw *itmv1.MaintenanceWindow) (admission.Warnings, error) {
	return nil, invalid(mw, ValidateMaintenanceWindow(mw))
}

// ValidateUpdate checks a changed MaintenanceWindow. Only a changed spec is
// checked, so an object stored before a rule existed (or one a newer time
// zone database no longer accepts) can still have its metadata written:
// above all its finalizer removed, so it can always be deleted.
func (v *MaintenanceWindowValidator) ValidateUpdate(_ context.Context, old, mw *itmv1.MaintenanceWindow) (admission.Warnings, error) {
	if old != nil && equality.Semantic.DeepEqual(old.Spec, mw.Spec) {
		return nil, nil
	}
	return nil, invalid(mw, ValidateMaintenanceWindow(mw))
}

// ValidateDelete allows every delete.
func (v *MaintenanceWindowValidator) ValidateDelete(context.Context, *itmv1.MaintenanceWindow) (admission.Warnings, error) {
	return nil, nil
}

// ValidateMaintenanceWindow returns every schedule and time zone error of mw,
// each naming its field.
func ValidateMaintenanceWindow(mw *itmv1.MaintenanceWindow) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	// The CRD defaults timeZone to UTC; empty only reaches us when defaulting
	// did not run (a dry client-side check), and means UTC there too.
	if tz := mw.Spec.TimeZone; tz != "" {
		if _, err := schedule.LoadTimeZone(tz); err != nil {
			errs = append(errs, field.Invalid(spec.Child("timeZone"), tz, err.Error()))
		}
	}
	for i, w := range mw.Spec.Windows {
		errs = append(errs, validateCron(spec.Child("windows").Index(i).Child("schedule"), w.Schedule)...)
	}
	for i, b := range mw.Spec.Blackouts {
		if b.Schedule != "" {
			errs = append(errs, validateCron(spec.Child("blackouts").Index(i).Child("schedule"), b.Schedule)...)
		}
	}
	return errs
}

func validateCron(path *field.Path, expr string) field.ErrorList {
	if _, err := schedule.ParseCron(expr); err != nil {
		return field.ErrorList{field.Invalid(path, expr, fmt.Sprintf("invalid cron expression: %v", err))}
	}
	return nil
}

func invalid(mw *itmv1.MaintenanceWindow, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(itmv1.GroupVersion.WithKind("MaintenanceWindow").GroupKind(), mw.Name, errs)
}
