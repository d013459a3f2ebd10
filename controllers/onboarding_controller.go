package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/onboarding"
)

// Field managers of onboarding.
const (
	// OnboardingFieldManager owns the conditions and fields of
	// OnboardingRequest status the controller writes (never Approved or
	// Denied).
	OnboardingFieldManager = "itmanager-onboarding"
	// AssignFieldManager owns Device spec.assignee of devices onboarding
	// assigned, and nothing else.
	AssignFieldManager = "itmanager-assign"
)

// Race back-offs of onboarding: a write conditional on the resourceVersion
// read that lost to a newer version (a Conflict) is retried once the cache
// has seen that version, which takes a watch event's delay, not a
// failure's backoff.
const (
	// onboardingConflictRequeue: a status write (or the record of the
	// defaults) conflicted with a newer version of the request.
	onboardingConflictRequeue = 100 * time.Millisecond
	// assignRetryRequeue: a device assignment lost a race for a device;
	// pick again once the cache has seen the winner.
	assignRetryRequeue = 200 * time.Millisecond
)

// Event reasons of onboarding besides the phases.
const (
	eventDefaultProvidersFixed = "DefaultProvidersFixed"
	eventDeviceAssigned        = "DeviceAssigned"
	eventDeviceReleased        = "DeviceReleased"
)

// OnboardingReconciler carries a person from request to Active and back to
// Offboarded: accounts in every AccountProvider, the credentials Secret,
// devices assigned, and all of it undone on offboarding. Each step is
// idempotent and what providers create carries the request's UID, so a
// restarted operator finds its own work; the finalizer makes deletion
// offboard first.
type OnboardingReconciler struct {
	client.Client
	Providers ProviderOpener
	Clock     clock.PassiveClock
	Recorder  recorder.EventRecorder
	Workers   int

	// retry counts each request's consecutive failed passes for their
	// backoff (the workqueue's own counts only returned errors).
	retry workqueue.TypedRateLimiter[reconcile.Request]
	// writer is the one status writer (with its memo).
	writer *kit.Status
}

// +kubebuilder:rbac:groups=itmanager.io,resources=onboardingrequests,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=onboardingrequests/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders,verbs=get;list;watch

// Reconcile moves one request on: gather the providers, bring every
// account and device to what the request's stage wants, write the status
// decided from that pass once, and wait for the next instant that matters.
func (r *OnboardingReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	o := &itmv1.OnboardingRequest{}
	if err := r.Get(ctx, req.NamespacedName, o); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if o.DeletionTimestamp == nil && !controllerutil.ContainsFinalizer(o, onboarding.Finalizer) {
		// Before anything is provisioned: deletion must offboard first.
		orig := o.DeepCopy()
		controllerutil.AddFinalizer(o, onboarding.Finalizer)
		if err := r.Patch(ctx, o, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if o.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(o, onboarding.Finalizer) {
		return ctrl.Result{}, nil
	}
	now := r.Clock.Now()
	d := onboarding.Decide(o, now)

	byName, defaults, err := r.providers(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	ps := &onboarding.Pass{Force: d.Stage == onboarding.Offboard && o.Annotations[itmv1.AnnotationForceOffboard] != ""}
	// A request that names no provider gets the defaults as they are now,
	// the first pass after its approval, recorded before any account is
	// created from them: a provider made default later never reaches it,
	// and a crash leaves a record of where to look.
	switch names, fix, err := onboarding.DefaultsToFix(o, d.Stage, defaults); {
	case err != nil:
		ps.Permanent = append(ps.Permanent, "status.defaultProviders: "+err.Error())
	case fix:
		if err := r.fixDefaults(ctx, o, names, now); err != nil {
			if apierrors.IsConflict(err) {
				return kit.After(onboardingConflictRequeue), nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	for _, w := range onboarding.Accounts(o, d.Stage) {
		r.syncAccount(ctx, o, w, byName[w.Provider], ps)
	}
	if err := r.syncDevices(ctx, o, d.Stage, ps); err != nil {
		return ctrl.Result{}, err
	}

	next := o.DeepCopy()
	next.Status = onboarding.Status(o, d, ps, now)
	// Conditional on the version read: the phase decides access, and a
	// status computed from an older read must not replace a newer one.
	sent, err := r.writer.Write(ctx, o, next, kit.AtReadVersion())
	if err != nil {
		if apierrors.IsConflict(err) {
			return kit.After(onboardingConflictRequeue), nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if sent {
		r.transition(o, &o.Status, &next.Status, ps)
		// The finalizer's removal below is conditional on the version our
		// own status write produced, not the one read before it.
		o.ResourceVersion = next.ResourceVersion
	}

	if o.DeletionTimestamp != nil && next.Status.Phase == itmv1.OnboardingPhaseOffboarded {
		orig := o.DeepCopy()
		controllerutil.RemoveFinalizer(o, onboarding.Finalizer)
		if err := r.Patch(ctx, o, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.retry.Forget(req)
		r.writer.Forget(o)
		return ctrl.Result{}, nil
	}

	if ps.Failing() {
		// Backoff, growing with every failure, until a provider answers;
		// but an endDate, startDate or renewal falling due meanwhile is
		// acted on when it does (returning the error would requeue after
		// the backoff alone, up to a quarter of an hour late).
		err := fmt.Errorf("onboarding %s: %s", o.Name, strings.Join(append(ps.Transient, ps.Blocked...), "; "))
		wait := onboarding.RetryAfter(now, r.retry.When(req), d.Next, ps.RenewAt)
		logf.FromContext(ctx).Error(err, "A provider failed; retrying", "after", wait)
		return kit.After(wait), nil
	}
	r.retry.Forget(req)
	res := kit.After(onboarding.Wake(now, d.Next, ps.RenewAt))
	if ps.AssignRetry {
		res = kit.Merge(res, kit.After(assignRetryRequeue))
	}
	return res, nil
}

// providers lists the AccountProviders by name, and the names of those
// marked default, sorted.
func (r *OnboardingReconciler) providers(ctx context.Context) (map[string]*itmv1.AccountProvider, []string, error) {
	var list itmv1.AccountProviderList
	if err := r.List(ctx, &list); err != nil {
		return nil, nil, err
	}
	byName := map[string]*itmv1.AccountProvider{}
	var defaults []string
	for i := range list.Items {
		p := &list.Items[i]
		byName[p.Name] = p
		if p.Spec.Default {
			defaults = append(defaults, p.Name)
		}
	}
	slices.Sort(defaults)
	return byName, defaults, nil
}

// fixDefaults records names as o's implicit default providers, conditional
// on the version read, before any side effect (its own write), and carries
// the new version into o so the pass's own status write follows it.
func (r *OnboardingReconciler) fixDefaults(ctx context.Context, o *itmv1.OnboardingRequest, names []string, now time.Time) error {
	base := o.DeepCopy()
	o.Status.DefaultProviders = &itmv1.DefaultProviders{Names: names, FixedAt: metav1.NewTime(now)}
	if _, err := r.writer.Write(ctx, base, o, kit.AtReadVersion()); err != nil {
		*o = *base
		return fmt.Errorf("record status.defaultProviders of OnboardingRequest %s: %w", o.Name, err)
	}
	if o.ResourceVersion == base.ResourceVersion {
		// Without the version written the pass's own write would conflict.
		*o = *base
		return fmt.Errorf("record status.defaultProviders of OnboardingRequest %s: the API server returned no new resourceVersion", o.Name)
	}
	r.events().Eventf(o, nil, corev1.EventTypeNormal, eventDefaultProvidersFixed, "Onboarding",
		"spec.accountProviders is empty: the default AccountProviders are fixed as [%s]", strings.Join(names, ", "))
	return nil
}

// transition emits the phase event and counts joiners and leavers on a
// phase change.
func (r *OnboardingReconciler) transition(o *itmv1.OnboardingRequest, from, to *itmv1.OnboardingRequestStatus, ps *onboarding.Pass) {
	ev, changed := onboarding.PhaseEvent(from, to, ps)
	if !changed {
		return
	}
	switch to.Phase {
	case itmv1.OnboardingPhaseActive:
		joiners.Inc()
	case itmv1.OnboardingPhaseOffboarded:
		leavers.Inc()
	}
	r.events().Event(o, nil, ev.Type, ev.Reason, "Onboarding", ev.Message)
}

func (r *OnboardingReconciler) events() kit.Emitter { return kit.Emitter{Recorder: r.Recorder} }
