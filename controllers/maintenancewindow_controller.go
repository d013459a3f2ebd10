package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
	"github.com/itmanager-io/itmanager/internal/rollout"
	"github.com/itmanager-io/itmanager/internal/schedule"
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
// upgrade's timeout) and polls only while a node drains. A window's
// finalizer releases the claims it left on Devices when it is deleted; a
// claim naming a window that is gone without that (deleted before it had
// the finalizer) is released when its Device is next seen.
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

	// claiming serializes plan-and-claim across windows; own remembers
	// the claims written that the cache may not show yet.
	claiming sync.Mutex
	own      unseenClaims

	writers sync.Once
	// windowStatus writes windows' status (ours outright); upgrades
	// writes Devices' status.upgrade (shared with the check-in service).
	windowStatus, upgrades *kit.Status
}

// +kubebuilder:rbac:groups=itmanager.io,resources=maintenancewindows,verbs=get;list;watch;patch
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
			return ctrl.Result{}, r.reconcileGone(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	log := ctrl.LoggerFrom(ctx).WithValues("MaintenanceWindow", klog.KObj(mw))
	ctx = ctrl.LoggerInto(ctx, log)
	if mw.DeletionTimestamp != nil {
		return ctrl.Result{}, r.reconcileDelete(ctx, mw)
	}
	sched, err := schedule.New(&mw.Spec)
	if err == nil {
		if _, serr := metav1.LabelSelectorAsSelector(&mw.Spec.Selector); serr != nil {
			err = fmt.Errorf("spec.selector: %w", serr)
		}
	}
	if err != nil {
		// Nothing is claimed for an invalid window, so it needs no finalizer
		// (and one stored before the webhook existed stays deletable).
		base := mw.DeepCopy()
		// The generation is observed (and found invalid): kstatus reads a
		// stale observedGeneration as InProgress, never as Failed.
		kit.Summarize(&mw.Status.Conditions, &mw.Status.ObservedGeneration, mw.Generation, r.Clock.Now(),
			kit.Summary{Reason: itmv1.ReasonInvalidSpec, Message: err.Error(), Stalled: true})
		_, serr := r.statusWriters().windowStatus.Write(ctx, base, mw)
		return ctrl.Result{}, errors.Join(serr, reconcile.TerminalError(err))
	}
	if !controllerutil.ContainsFinalizer(mw, itmv1.MaintenanceWindowFinalizer) {
		// Before the first claim: from now on a deletion releases them first.
		base := mw.DeepCopy()
		controllerutil.AddFinalizer(mw, itmv1.MaintenanceWindowFinalizer)
		if err := r.Patch(ctx, mw, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	return r.reconcileWindow(ctx, mw, sched)
}

// reconcileWindow plans the rollout, acts on the plan and writes the
// window's status once.
func (r *MaintenanceWindowReconciler) reconcileWindow(ctx context.Context, mw *itmv1.MaintenanceWindow, sched *schedule.Schedule) (ctrl.Result, error) {
	now := r.Clock.Now()
	base := mw.DeepCopy()
	// Planning and claiming is one step across all windows, over the
	// devices as this process last wrote them: two windows selecting the
	// same devices must not both start one on a cache that has not yet
	// shown the other's claim (maxUnavailable counts claims of any window).
	r.claiming.Lock()
	locked := true
	defer func() {
		if locked {
			r.claiming.Unlock()
		}
	}()
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
	startErr := r.startAll(ctx, mw, plan, now)
	r.claiming.Unlock()
	locked = false
	act := r.act(ctx, mw, plan, now, startErr)

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
	st.BlockedBy = act.blockedBy
	r.conditions(mw, base, plan, in, act.blockedBy, now, act.err)
	if _, serr := r.statusWriters().windowStatus.Write(ctx, base, mw); serr != nil {
		return ctrl.Result{}, errors.Join(act.err, serr)
	}
	recordWindow(mw)
	if act.err != nil {
		return ctrl.Result{}, act.err
	}
	later := r.Clock.Now()
	res := kit.Merge(kit.At(later, v.NextBoundary), kit.At(later, plan.NextTimeout), kit.At(later, act.requeueAt))
	if res.RequeueAfter > 0 {
		res = kit.Urgent(res)
	}
	return res, nil
}

// reconcileDelete releases the claims a deleted window left on Devices,
// then lets the window go.
func (r *MaintenanceWindowReconciler) reconcileDelete(ctx context.Context, mw *itmv1.MaintenanceWindow) error {
	if err := r.releaseClaims(ctx, mw.Name, mw); err != nil {
		return err
	}
	if controllerutil.ContainsFinalizer(mw, itmv1.MaintenanceWindowFinalizer) {
		base := mw.DeepCopy()
		controllerutil.RemoveFinalizer(mw, itmv1.MaintenanceWindowFinalizer)
		if err := r.Patch(ctx, mw, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	r.statusWriters().windowStatus.Forget(mw)
	forgetWindow(mw.Name)
	return nil
}

// reconcileGone handles a window name with no window in the cache: one
// deleted (perhaps while no manager ran, or before it had the finalizer)
// whose Devices may still name it. The cache may merely not have seen a
// window created a moment ago, so absence is confirmed live before any
// claim is released.
func (r *MaintenanceWindowReconciler) reconcileGone(ctx context.Context, name string) error {
	forgetWindow(name)
	err := r.APIReader.Get(ctx, types.NamespacedName{Name: name}, &itmv1.MaintenanceWindow{})
	if !apierrors.IsNotFound(err) {
		return err // nil: it exists, and its own events bring it here
	}
	return r.releaseClaims(ctx, name, nil)
}

func (r *MaintenanceWindowReconciler) statusWriters() *MaintenanceWindowReconciler {
	r.writers.Do(func() {
		r.windowStatus = &kit.Status{Client: r.Client, FieldManager: WindowFieldManager}
		r.upgrades = &kit.Status{Client: r.Client, FieldManager: WindowFieldManager, Shared: true}
	})
	return r
}

func (r *MaintenanceWindowReconciler) events() kit.Emitter { return kit.Emitter{Recorder: r.Recorder} }

func (r *MaintenanceWindowReconciler) drainPoll() time.Duration {
	if r.DrainPoll > 0 {
		return r.DrainPoll
	}
	return 5 * time.Second
}
