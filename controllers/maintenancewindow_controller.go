package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/rollout"
	"github.com/itmanager-io/itmanager/internal/schedule"
	"github.com/itmanager-io/itmanager/internal/text"
)

// WindowFieldManager owns the status of MaintenanceWindows.
const WindowFieldManager = "itmanager-maintenance"

// MaintenanceWindowReconciler opens and closes windows and rolls upgrades
// out inside them: agent devices get an authorization their agent picks up
// at its next check-in; Node devices are cordoned, drained through the
// Eviction API and upgraded by a Job on the node. All progress lives in each
// Device's status.upgrade and in the world (the Node's cordon mark, the
// Job), so a restarted operator resumes where it was. It requeues at the
// next boundary (a window opening or closing, a cutoff, a blackout, an
// upgrade's timeout) and polls only while a node drains.
type MaintenanceWindowReconciler struct {
	client.Client
	// APIReader lists a node's pods and PodDisruptionBudgets live: the
	// manager does not cache the cluster's pods.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Recorder  recorder.EventRecorder
	Workers   int
	// UpgradesNamespace is where node upgrade Jobs run (default
	// itmanager-upgrades); the manager's Job rights are only there.
	UpgradesNamespace string
	// DrainPoll is how often a draining node is looked at (default 5s).
	DrainPoll time.Duration
}

// +kubebuilder:rbac:groups=itmanager.io,resources=maintenancewindows,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=maintenancewindows/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=list
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=list
// Node upgrade Jobs, and their pods for the version report, only in the
// upgrades namespace (the chart and make dev put this Role where
// --upgrades-namespace points).
// +kubebuilder:rbac:groups=batch,namespace=itmanager-upgrades,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",namespace=itmanager-upgrades,resources=pods,verbs=list

// Reconcile decides one window at the clock's now and acts on it.
func (r *MaintenanceWindowReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mw := &itmv1.MaintenanceWindow{}
	if err := r.Get(ctx, req.NamespacedName, mw); err != nil {
		if apierrors.IsNotFound(err) {
			forgetWindow(req.Name)
			return ctrl.Result{}, r.revokeOrphans(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	if mw.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx).WithValues("MaintenanceWindow", klog.KObj(mw))
	ctx = ctrl.LoggerInto(ctx, log)
	now := r.Clock.Now()
	base := mw.DeepCopy()

	sched, err := schedule.New(&mw.Spec)
	if err == nil {
		_, err = metav1.LabelSelectorAsSelector(&mw.Spec.Selector)
		if err != nil {
			err = fmt.Errorf("spec.selector: %w", err)
		}
	}
	if err != nil {
		setCondition(&mw.Status.Conditions, mw.Generation, now, itmv1.ConditionReady, metav1.ConditionFalse, ReasonInvalidSpec, err.Error())
		setCondition(&mw.Status.Conditions, mw.Generation, now, itmv1.ConditionStalled, metav1.ConditionTrue, ReasonInvalidSpec, err.Error())
		return ctrl.Result{}, errors.Join(r.applyStatus(ctx, base, mw), reconcile.TerminalError(err))
	}
	meta.RemoveStatusCondition(&mw.Status.Conditions, itmv1.ConditionStalled)

	devices, err := r.selected(ctx, mw)
	if err != nil {
		return ctrl.Result{}, err
	}
	v := sched.At(now)
	in := rollout.Input{
		Window: mw.Name, Spec: &mw.Spec, Devices: devices, Now: now,
		Open: v.Open, CanStart: v.CanStart, Blackout: v.InBlackout && v.InWindow,
		NextStart: v.Next.Start,
	}
	if v.InWindow {
		in.WindowStart, in.WindowEnd = v.Current.Start, v.Current.End
	}
	plan := rollout.Compute(in)

	// Act: time out, refuse unconfirmed successes, start, progress nodes.
	var errs []error
	requeue := v.NextBoundary
	earliest := func(t time.Time) {
		if !t.IsZero() && (requeue.IsZero() || t.Before(requeue)) {
			requeue = t
		}
	}
	earliest(plan.NextTimeout)
	for _, d := range plan.TimedOut {
		msg := fmt.Sprintf("no result within upgradeTimeout %s (state %s)", rollout.UpgradeTimeout(&mw.Spec), d.Status.Upgrade.State)
		if d.Spec.Class == itmv1.DeviceClassNode {
			msg += "; the node is left cordoned for inspection"
		}
		errs = append(errs, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed, msg, now))
	}
	for _, d := range plan.Unconfirmed {
		observed := "an unknown version"
		if d.Status.Observed != nil && d.Status.Observed.OSVersion != "" {
			observed = d.Status.Observed.OSVersion
		}
		errs = append(errs, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed,
			fmt.Sprintf("reported success but runs %s, not the target %s", observed, d.Spec.OS.TargetVersion), now))
	}
	blockedBy := plan.BlockedBy
	for _, d := range plan.Start {
		errs = append(errs, r.start(ctx, mw, d, now))
		if d.Spec.Class == itmv1.DeviceClassNode {
			earliest(now.Add(r.drainPoll())) // the operator drives it
		}
	}
	for _, d := range plan.InFlight {
		if d.Spec.Class != itmv1.DeviceClassNode {
			continue
		}
		step, err := r.progressNode(ctx, mw, d, now)
		errs = append(errs, err)
		if step.blocked != "" {
			blockedBy = step.blocked
		}
		earliest(step.requeueAt)
	}
	err = errors.Join(errs...)

	// Status, once.
	st := &mw.Status
	st.WindowOpen = in.Open
	st.CurrentWindow, st.NextWindow = nil, nil
	if v.InWindow {
		st.CurrentWindow = &itmv1.Interval{Start: metav1.NewTime(v.Current.Start), End: metav1.NewTime(v.Current.End)}
	}
	if v.HasNext {
		st.NextWindow = &itmv1.Interval{Start: metav1.NewTime(v.Next.Start), End: metav1.NewTime(v.Next.End)}
	}
	st.Devices = plan.Counts
	st.BlockedBy = blockedBy
	r.conditions(mw, plan, in, blockedBy, now, err)
	if err == nil {
		st.ObservedGeneration = mw.Generation
	}
	if serr := r.applyStatus(ctx, base, mw); serr != nil {
		return ctrl.Result{}, errors.Join(err, serr)
	}
	recordWindow(mw)
	if err != nil {
		return ctrl.Result{}, err
	}
	if requeue.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(requeue.Sub(r.Clock.Now()), time.Millisecond), Priority: ptr.To(freshnessPriority)}, nil
}

// revokeOrphans withdraws the authorizations a deleted window handed out
// that no agent has started yet: nobody would time them out any more, and
// an agent must not upgrade on behalf of a window that is gone. Upgrades
// already under way are left to finish and report.
func (r *MaintenanceWindowReconciler) revokeOrphans(ctx context.Context, window string) error {
	list := &itmv1.DeviceList{}
	if err := r.List(ctx, list); err != nil {
		return err
	}
	var errs []error
	for i := range list.Items {
		d := &list.Items[i]
		if u := d.Status.Upgrade; u != nil && u.Window == window && u.State == itmv1.UpgradeStateAuthorized {
			base := d.DeepCopy()
			d.Status.Upgrade.State = itmv1.UpgradeStateFailed
			d.Status.Upgrade.Message = "MaintenanceWindow " + window + " was deleted before the upgrade started"
			d.Status.Upgrade.FinishedAt = ptr.To(metav1.NewTime(r.Clock.Now()))
			if err := r.Status().Patch(ctx, d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
				errs = append(errs, fmt.Errorf("revoke the upgrade of Device %s: %w", d.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (r *MaintenanceWindowReconciler) drainPoll() time.Duration {
	if r.DrainPoll > 0 {
		return r.DrainPoll
	}
	return 5 * time.Second
}

// selected are the Devices the window's selector picks.
func (r *MaintenanceWindowReconciler) selected(ctx context.Context, mw *itmv1.MaintenanceWindow) ([]*itmv1.Device, error) {
	sel, err := metav1.LabelSelectorAsSelector(&mw.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list := &itmv1.DeviceList{}
	if err := r.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	out := make([]*itmv1.Device, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

// start claims a device for this window, guarded by the resourceVersion of
// the read that saw it free: two windows racing for one device cannot both
// win. Agent devices are Authorized (their agent takes it from there); Node
// devices go InProgress and the operator drives them.
func (r *MaintenanceWindowReconciler) start(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, now time.Time) error {
	state := itmv1.UpgradeStateAuthorized
	msg := "authorized; the agent starts at its next check-in"
	if d.Spec.Class == itmv1.DeviceClassNode {
		state, msg = itmv1.UpgradeStateInProgress, "cordoning"
	}
	attempts := int32(1)
	if d.Status.Upgrade != nil {
		attempts = d.Status.Upgrade.Attempts + 1
	}
	base := d.DeepCopy()
	d.Status.Upgrade = &itmv1.UpgradeStatus{
		State: state, TargetVersion: d.Spec.OS.TargetVersion, Window: mw.Name,
		StartedAt: ptr.To(metav1.NewTime(now)), Attempts: attempts, Message: msg,
	}
	if err := r.Status().Patch(ctx, d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("start the upgrade of Device %s: %w", d.Name, err)
	}
	if r.Recorder != nil {
		r.Recorder.Eventf(d, mw, corev1.EventTypeNormal, "UpgradeStarted", "Upgrade", "window %s: upgrade to %s started (attempt %d)", mw.Name, d.Spec.OS.TargetVersion, attempts)
	}
	return nil
}

// finish records an upgrade's end on the device.
func (r *MaintenanceWindowReconciler) finish(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, state itmv1.UpgradeState, msg string, now time.Time) error {
	base := d.DeepCopy()
	u := d.Status.Upgrade.DeepCopy()
	u.State, u.Message, u.FinishedAt = state, text.Truncate(msg, maxUpgradeMessage), ptr.To(metav1.NewTime(now))
	d.Status.Upgrade = u
	if err := r.Status().Patch(ctx, d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("record the upgrade of Device %s as %s: %w", d.Name, state, err)
	}
	if r.Recorder != nil {
		kind, reason := corev1.EventTypeNormal, "UpgradeSucceeded"
		if state == itmv1.UpgradeStateFailed {
			kind, reason = corev1.EventTypeWarning, "UpgradeFailed"
		}
		r.Recorder.Eventf(d, mw, kind, reason, "Upgrade", "window %s: %s", mw.Name, msg)
	}
	return nil
}

func (r *MaintenanceWindowReconciler) conditions(mw *itmv1.MaintenanceWindow, plan rollout.Plan, in rollout.Input, blockedBy string, now time.Time, err error) {
	conds, gen := &mw.Status.Conditions, mw.Generation
	old := meta.FindStatusCondition(*conds, itmv1.MaintenanceConditionWindowOpen)
	switch {
	case in.Open:
		setCondition(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionTrue, itmv1.ReasonWindowOpen,
			"open until "+in.WindowEnd.UTC().Format(time.RFC3339))
	case in.Blackout:
		setCondition(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionFalse, itmv1.ReasonBlackout, "a blackout holds")
	default:
		setCondition(conds, gen, now, itmv1.MaintenanceConditionWindowOpen, metav1.ConditionFalse, itmv1.ReasonOutsideWindow, blockedBy)
	}
	if r.Recorder != nil && old != nil && (old.Status == metav1.ConditionTrue) != in.Open {
		if in.Open {
			r.Recorder.Eventf(mw, nil, corev1.EventTypeNormal, "WindowOpened", "Window", "open until %s; %d devices pending", in.WindowEnd.UTC().Format(time.RFC3339), plan.Counts.Pending)
		} else {
			r.Recorder.Eventf(mw, nil, corev1.EventTypeNormal, "WindowClosed", "Window", "%d succeeded, %d failed, %d pending, %d in progress",
				plan.Counts.Succeeded, plan.Counts.Failed, plan.Counts.Pending, plan.Counts.InProgress)
		}
	}
	if plan.Counts.InProgress > 0 {
		setCondition(conds, gen, now, itmv1.MaintenanceConditionProgressing, metav1.ConditionTrue, "Upgrading",
			fmt.Sprintf("%d in progress (maxUnavailable %d), %d pending", plan.Counts.InProgress, plan.MaxUnavailable, plan.Counts.Pending))
	} else {
		reason := itmv1.ReasonRolloutComplete
		if plan.Reason != "" {
			reason = plan.Reason
		}
		msg := blockedBy
		if msg == "" {
			msg = "nothing to upgrade"
		}
		setCondition(conds, gen, now, itmv1.MaintenanceConditionProgressing, metav1.ConditionFalse, reason, msg)
	}
	if plan.Reason == itmv1.ReasonFailureBudget || blockedBy != "" && plan.Reason == "" && plan.Counts.InProgress > 0 {
		reason := plan.Reason
		if reason == "" {
			reason = itmv1.ReasonDrainBlocked
		}
		setCondition(conds, gen, now, itmv1.MaintenanceConditionDegraded, metav1.ConditionTrue, reason, blockedBy)
	} else {
		setCondition(conds, gen, now, itmv1.MaintenanceConditionDegraded, metav1.ConditionFalse, "AsExpected", "no failure budget exhausted, no drain blocked")
	}
	if err != nil {
		setCondition(conds, gen, now, itmv1.ConditionReady, metav1.ConditionFalse, ReasonApplyFailed, err.Error())
	} else {
		setCondition(conds, gen, now, itmv1.ConditionReady, metav1.ConditionTrue, "Reconciled", "schedule valid; rollout reconciled")
	}
}

// applyStatus writes the status once, only when it changed, by
// server-side apply (the operator owns this status outright).
func (r *MaintenanceWindowReconciler) applyStatus(ctx context.Context, base, mw *itmv1.MaintenanceWindow) error {
	if equality.Semantic.DeepEqual(base.Status, mw.Status) {
		return nil
	}
	return applyStatus(ctx, r.Client, mw, &mw.Status, WindowFieldManager)
}

// SetupWithManager watches windows, the Devices they select (and the
// window a device's upgrade names), and the upgrade Jobs they own.
func (r *MaintenanceWindowReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("maintenancewindow").
		For(&itmv1.MaintenanceWindow{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&batchv1.Job{}).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(r.deviceToWindows),
			builder.WithPredicates(deviceRolloutChanged())).
		Complete(r)
}

// deviceRolloutChanged passes what a rollout reads: labels, spec (target,
// lifecycle), observed version, CheckedIn, upgrade progress.
func deviceRolloutChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.Device), e.ObjectNew.(*itmv1.Device)
		ov, nv := "", ""
		if o.Status.Observed != nil {
			ov = o.Status.Observed.OSVersion
		}
		if n.Status.Observed != nil {
			nv = n.Status.Observed.OSVersion
		}
		return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Labels, n.Labels) || ov != nv ||
			rollout.CheckedIn(o) != rollout.CheckedIn(n) || !equality.Semantic.DeepEqual(o.Status.Upgrade, n.Status.Upgrade)
	}}
}

func (r *MaintenanceWindowReconciler) deviceToWindows(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	list := &itmv1.MaintenanceWindowList{}
	if err := r.List(ctx, list); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, mw := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(&mw.Spec.Selector)
		claimed := d.Status.Upgrade != nil && d.Status.Upgrade.Window == mw.Name
		if claimed || (err == nil && sel.Matches(labels.Set(d.Labels))) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: mw.Name}})
		}
	}
	return out
}
