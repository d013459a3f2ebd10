package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/onboarding"
	"github.com/itmanager-io/itmanager/internal/text"
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
	// skippedPrefix starts the message of an account force-offboard gave
	// up on.
	skippedPrefix = "not undone, skipped by " + itmv1.AnnotationForceOffboard + ": "
	// maxAccountMessage is status.accounts[].message's limit.
	maxAccountMessage = 1024
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
}

// +kubebuilder:rbac:groups=itmanager.io,resources=onboardingrequests,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=onboardingrequests/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=itmanager.io,resources=accountproviders,verbs=get;list;watch

// pass is what one reconcile found and did.
type pass struct {
	accounts    []itmv1.AccountStatus
	credentials *itmv1.ObjectReference
	renewAt     time.Time
	// transient errors are retried with backoff; permanent ones wait for
	// a change (a conflict, a bad provider); blocked are what offboarding
	// cannot undo; skipped what force-offboard gave up on; missing the
	// named providers that do not exist.
	transient, permanent, blocked, skipped, missing []string
	devices                                         []string
	unmet                                           []string
	// held are devices that could not be let go.
	held        []string
	assignRetry bool
	// force: itmanager.io/force-offboard is set on an offboarding request.
	force bool
}

// Reconcile moves one request on.
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

	var providers itmv1.AccountProviderList
	if err := r.List(ctx, &providers); err != nil {
		return ctrl.Result{}, err
	}
	byName := map[string]*itmv1.AccountProvider{}
	var defaults []string
	for i := range providers.Items {
		p := &providers.Items[i]
		byName[p.Name] = p
		if p.Spec.Default {
			defaults = append(defaults, p.Name)
		}
	}
	slices.Sort(defaults)

	force := d.Stage == onboarding.Offboard && o.Annotations[itmv1.AnnotationForceOffboard] != ""
	ps := pass{force: force}
	// A request that names no provider gets the defaults as they are now,
	// the first pass after its approval, recorded before any account is
	// created from them: a provider made default later never reaches it,
	// and a crash leaves a record of where to look.
	switch names, fix, err := onboarding.DefaultsToFix(o, d.Stage, defaults); {
	case err != nil:
		ps.permanent = append(ps.permanent, "status.defaultProviders: "+err.Error())
	case fix:
		if err := r.fixDefaults(ctx, o, names, now); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	for _, w := range onboarding.Accounts(o, d.Stage) {
		r.syncAccount(ctx, o, w, byName[w.Provider], &ps)
	}
	if err := r.syncDevices(ctx, o, d.Stage, &ps); err != nil {
		return ctrl.Result{}, err
	}

	status := r.status(o, d, &ps, now)
	if !equality.Semantic.DeepEqual(status, o.Status) {
		// Conditional on the version read: the phase decides access, and a
		// status computed from an older read must not replace a newer one.
		if err := applyStatusAt(ctx, r.Client, o, &status, OnboardingFieldManager, o.ResourceVersion); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.transition(o, o.Status, status, &ps)
	}

	if o.DeletionTimestamp != nil && status.Phase == itmv1.OnboardingPhaseOffboarded {
		orig := o.DeepCopy()
		controllerutil.RemoveFinalizer(o, onboarding.Finalizer)
		if err := r.Patch(ctx, o, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.retry.Forget(req)
		return ctrl.Result{}, nil
	}

	if len(ps.transient) > 0 || (len(ps.blocked) > 0 && !force) {
		// Backoff, growing with every failure, until a provider answers;
		// but an endDate, startDate or renewal falling due meanwhile is
		// acted on when it does (returning the error would requeue after
		// the backoff alone, up to a quarter of an hour late).
		err := fmt.Errorf("onboarding %s: %s", o.Name, strings.Join(append(ps.transient, ps.blocked...), "; "))
		wait := onboarding.RetryAfter(now, r.retry.When(req), d.Next, ps.renewAt)
		logf.FromContext(ctx).Error(err, "A provider failed; retrying", "after", wait)
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.retry.Forget(req)
	res := ctrl.Result{RequeueAfter: onboarding.Wake(now, d.Next, ps.renewAt)}
	if ps.assignRetry {
		// Lost a race for a device: pick again once the cache has seen
		// the winner.
		res.RequeueAfter = 200 * time.Millisecond
	}
	return res, nil
}

// fixDefaults records names as o's implicit default providers, conditional
// on the version read, and carries the new version into o so the pass's
// own status write follows it.
func (r *OnboardingReconciler) fixDefaults(ctx context.Context, o *itmv1.OnboardingRequest, names []string, now time.Time) error {
	st := o.Status.DeepCopy()
	st.DefaultProviders = &itmv1.DefaultProviders{Names: names, FixedAt: metav1.NewTime(now)}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(st)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": content}}
	u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("OnboardingRequest"))
	u.SetName(o.Name)
	u.SetUID(o.UID)
	u.SetResourceVersion(o.ResourceVersion)
	if err := r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(OnboardingFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("record status.defaultProviders of OnboardingRequest %s: %w", o.Name, err)
	}
	if u.GetResourceVersion() == "" || u.GetResourceVersion() == o.ResourceVersion {
		// Without the version written the pass's own write would conflict.
		return fmt.Errorf("record status.defaultProviders of OnboardingRequest %s: the API server returned no new resourceVersion", o.Name)
	}
	o.Status = *st
	o.ResourceVersion = u.GetResourceVersion()
	if r.Recorder != nil {
		r.Recorder.Eventf(o, nil, corev1.EventTypeNormal, "DefaultProvidersFixed", "Onboarding",
			"spec.accountProviders is empty: the default AccountProviders are fixed as [%s]", strings.Join(names, ", "))
	}
	return nil
}

// accountFor is what a provider holds for o in a stage.
func accountFor(o *itmv1.OnboardingRequest, want onboarding.Want) accounts.Account {
	a := accounts.Account{User: o.Name, Owner: o.UID, Person: o.Spec.Person}
	if want == onboarding.WantEnabled {
		a.Groups = slices.Clone(o.Spec.Groups)
	}
	return a
}

func previous(o *itmv1.OnboardingRequest, provider string) *itmv1.AccountStatus {
	for i := range o.Status.Accounts {
		if o.Status.Accounts[i].Provider == provider {
			return &o.Status.Accounts[i]
		}
	}
	return nil
}

// syncAccount brings one provider's account to its wanted state and
// records the outcome. Nothing recorded is ever dropped: an account that
// could not be undone keeps its record until it is, or until force-offboard
// records it as skipped.
func (r *OnboardingReconciler) syncAccount(ctx context.Context, o *itmv1.OnboardingRequest, w onboarding.AccountWant, p *itmv1.AccountProvider, ps *pass) {
	prev := previous(o, w.Provider)
	record := func(state itmv1.AccountState, id, msg string) {
		ps.accounts = append(ps.accounts, itmv1.AccountStatus{Provider: w.Provider, ID: id, State: state, Message: text.Truncate(msg, maxAccountMessage)})
	}
	keep := func(msg string) {
		if prev == nil {
			record(itmv1.AccountStateFailed, "", msg)
			return
		}
		record(prev.State, prev.ID, msg)
	}
	// fail records err: a permanent error (conflict, configuration) marks
	// the account Failed; a transient one keeps the last known state.
	fail := func(err error) {
		msg := err.Error()
		provisioningErrors.WithLabelValues(w.Provider).Inc()
		switch {
		case w.Want == onboarding.WantGone && ps.force:
			ps.skipped = append(ps.skipped, w.Provider)
			id := ""
			if prev != nil {
				id = prev.ID
			}
			record(itmv1.AccountStateFailed, id, skippedPrefix+msg)
		case w.Want == onboarding.WantGone:
			ps.blocked = append(ps.blocked, fmt.Sprintf("AccountProvider %s: %s", w.Provider, msg))
			keep(msg)
		case accounts.IsConflict(err) || (accounts.IsConfig(err) && (prev == nil || prev.ID == "")):
			// Someone else's account, or a provider that cannot work for
			// an account not made yet (no record, or only the record of
			// this same failure): waits for a person to act.
			ps.permanent = append(ps.permanent, fmt.Sprintf("AccountProvider %s: %s", w.Provider, msg))
			id := ""
			if prev != nil {
				id = prev.ID
			}
			record(itmv1.AccountStateFailed, id, msg)
		default:
			ps.transient = append(ps.transient, fmt.Sprintf("AccountProvider %s: %s", w.Provider, msg))
			keep(msg + "; retrying")
		}
	}

	if p == nil {
		switch {
		case w.Want != onboarding.WantGone:
			ps.missing = append(ps.missing, w.Provider)
			if prev != nil {
				record(prev.State, prev.ID, "AccountProvider "+w.Provider+" does not exist")
			}
		case prev == nil:
			// Named but never provisioned and gone: nothing to undo.
		case prev.State == itmv1.AccountStateDeleted || prev.State == itmv1.AccountStateDisabled:
			record(prev.State, prev.ID, prev.Message)
		default:
			fail(fmt.Errorf("AccountProvider %s does not exist, so its account cannot be undone; set the annotation %s to finish without it", w.Provider, itmv1.AnnotationForceOffboard))
		}
		return
	}
	if why := onboarding.NotTheFixedDefault(o, p); why != "" && w.Want != onboarding.WantGone {
		fail(&accounts.ConfigError{Msg: why})
		return
	}
	if w.Want == onboarding.WantGone && prev != nil && prev.State == itmv1.AccountStateDeleted {
		record(prev.State, prev.ID, prev.Message) // done before: not revisited
		return
	}
	if w.Want == onboarding.WantGone && prev != nil && prev.State == itmv1.AccountStateFailed && strings.HasPrefix(prev.Message, skippedPrefix) {
		ps.skipped = append(ps.skipped, w.Provider) // given up on by force: not revisited
		record(prev.State, prev.ID, prev.Message)
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prov, err := r.Providers.Open(opCtx, p)
	if err != nil {
		fail(err)
		return
	}
	defer func() { _ = prov.Close() }()
	a := accountFor(o, w.Want)
	switch w.Want {
	case onboarding.WantEnabled, onboarding.WantDisabled:
		// The provider's own check first: a forbidden or missing namespace,
		// an unreadable usersDN, whatever its status said last.
		if err := prov.Check(opCtx); err != nil {
			fail(err)
			return
		}
		res, err := prov.Ensure(opCtx, a)
		if err != nil {
			fail(err)
			return
		}
		active := w.Want == onboarding.WantEnabled
		if res, err = prov.SetActive(opCtx, a, active); err != nil {
			fail(err)
			return
		}
		state, msg := itmv1.AccountStateProvisioned, ""
		if !active {
			state, msg = itmv1.AccountStateDisabled, "created disabled until spec.startDate"
		}
		if err := prov.SyncGroups(opCtx, a); err != nil {
			if !accounts.IsConflict(err) {
				fail(err)
				return
			}
			// The account is in place; a group someone else owns is not
			// joined. Reported, and waits for a person.
			provisioningErrors.WithLabelValues(w.Provider).Inc()
			ps.permanent = append(ps.permanent, fmt.Sprintf("AccountProvider %s: %s", w.Provider, err.Error()))
			msg = err.Error()
		}
		record(state, res.ID, msg)
		if !active {
			return
		}
		if res.Credentials != nil && ps.credentials == nil {
			ps.credentials = res.Credentials
		}
		if !res.RenewAt.IsZero() && (ps.renewAt.IsZero() || res.RenewAt.Before(ps.renewAt)) {
			ps.renewAt = res.RenewAt
		}
	case onboarding.WantGone:
		obs, err := prov.Observe(opCtx, a)
		if accounts.IsConflict(err) {
			// Someone else's account (never ours, or ours replaced):
			// nothing of this request's to undo, and never touched.
			if prev != nil {
				record(itmv1.AccountStateFailed, prev.ID, err.Error()+"; nothing of this request's to undo")
			}
			return
		}
		if err != nil {
			fail(err)
			return
		}
		if !obs.Exists {
			if prev != nil {
				record(itmv1.AccountStateDeleted, prev.ID, "")
			}
			return
		}
		if prov.OffboardDeletes() {
			if err := prov.Delete(opCtx, a); err != nil {
				fail(err)
				return
			}
			record(itmv1.AccountStateDeleted, obs.ID, "")
			return
		}
		if _, err := prov.SetActive(opCtx, a, false); err != nil {
			fail(err)
			return
		}
		if err := prov.SyncGroups(opCtx, a); err != nil {
			fail(err)
			return
		}
		record(itmv1.AccountStateDisabled, obs.ID, "")
	}
}

// syncDevices assigns and releases devices per the plan. An assignment
// applies spec.assignee with the resourceVersion of the read that saw the
// device unassigned: a conflict means someone else won, and the next pass
// picks again.
func (r *OnboardingReconciler) syncDevices(ctx context.Context, o *itmv1.OnboardingRequest, stage onboarding.Stage, ps *pass) error {
	var list itmv1.DeviceList
	switch stage {
	case onboarding.Active, onboarding.Scheduled:
		if len(o.Spec.Devices) == 0 && len(o.Status.Devices) == 0 {
			return nil
		}
		if err := r.List(ctx, &list); err != nil {
			return err
		}
	default:
		// Nothing is assigned: only the person's own devices matter.
		if err := r.List(ctx, &list, client.MatchingFields{IndexDeviceAssignee: o.Name}); err != nil {
			return err
		}
	}
	plan := onboarding.Devices(o.Name, o.Spec.Devices, o.Status.Devices, list.Items, stage)
	byName := map[string]*itmv1.Device{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	ps.devices = append(ps.devices, plan.Keep...)
	ps.unmet = plan.Unmet
	log := logf.FromContext(ctx)
	for _, a := range plan.Assign {
		_, err := r.applyAssignee(ctx, byName[a.Device], o.Name)
		switch {
		case err == nil:
			ps.devices = append(ps.devices, a.Device)
			if r.Recorder != nil {
				r.Recorder.Eventf(o, byName[a.Device], corev1.EventTypeNormal, "DeviceAssigned", "Assign", "Device %s assigned for spec.devices[%d]", a.Device, a.Index)
			}
		case apierrors.IsConflict(err):
			log.V(1).Info("Device assignment lost a race; picking again", "device", a.Device)
			ps.assignRetry = true
			ps.unmet = append(ps.unmet, fmt.Sprintf("spec.devices[%d]: Device %s was taken concurrently; picking again", a.Index, a.Device))
		default:
			return fmt.Errorf("assign Device %s: %w", a.Device, err)
		}
	}
	for _, name := range plan.Release {
		still, err := r.applyAssignee(ctx, byName[name], "")
		if err != nil {
			if apierrors.IsConflict(err) {
				ps.assignRetry = true
				ps.devices = append(ps.devices, name)
				continue
			}
			return fmt.Errorf("release Device %s: %w", name, err)
		}
		if still == o.Name {
			// Another field manager (a GitOps tool, kubectl apply) holds
			// spec.assignee: only it can let go.
			ps.devices = append(ps.devices, name)
			ps.held = append(ps.held, fmt.Sprintf("Device %s: spec.assignee is set by another field manager (GitOps, kubectl apply); remove it there", name))
			continue
		}
		if r.Recorder != nil {
			r.Recorder.Eventf(o, byName[name], corev1.EventTypeNormal, "DeviceReleased", "Release", "Device %s unassigned", name)
		}
	}
	slices.Sort(ps.devices)
	ps.devices = slices.Compact(ps.devices)
	return nil
}

// applyAssignee applies (or, with "", gives up) spec.assignee of d under
// AssignFieldManager, conditional on the resourceVersion read, and returns
// the assignee the Device has afterwards.
func (r *OnboardingReconciler) applyAssignee(ctx context.Context, d *itmv1.Device, assignee string) (string, error) {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("Device"))
	u.SetName(d.Name)
	u.SetResourceVersion(d.ResourceVersion)
	if assignee != "" {
		u.Object["spec"] = map[string]any{"assignee": assignee}
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(AssignFieldManager)); err != nil {
		return "", err
	}
	after, _, _ := unstructured.NestedString(u.Object, "spec", "assignee")
	return after, nil
}

// status computes the request's status from one pass.
func (r *OnboardingReconciler) status(o *itmv1.OnboardingRequest, d onboarding.Decision, ps *pass, now time.Time) itmv1.OnboardingRequestStatus {
	st := *o.Status.DeepCopy()
	gen := o.Generation
	st.ObservedGeneration = gen
	st.Accounts = ps.accounts
	st.Devices = ps.devices
	st.CredentialsSecret = nil
	if d.Stage == onboarding.Active {
		st.CredentialsSecret = ps.credentials
		if st.CredentialsSecret == nil && len(ps.transient) > 0 {
			// A provider that did not answer did not revoke anything.
			st.CredentialsSecret = o.Status.CredentialsSecret
		}
	}
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		setCondition(&st.Conditions, gen, now, t, s, reason, msg)
	}
	accountsOK := len(ps.transient)+len(ps.permanent)+len(ps.missing)+len(ps.blocked) == 0
	devicesOK := len(ps.unmet) == 0
	var problems []string
	problems = append(problems, ps.permanent...)
	problems = append(problems, ps.blocked...)
	problems = append(problems, ps.transient...)
	for _, m := range ps.missing {
		problems = append(problems, "AccountProvider "+m+" does not exist")
	}

	offboarding := onboarding.Leaving(d.Stage)
	undone := accountsOK && (len(ps.devices) == 0 || (ps.force && len(ps.devices) == len(ps.held)))
	switch {
	case d.Stage == onboarding.Offboard && undone:
		st.Phase = itmv1.OnboardingPhaseOffboarded
	case d.Stage == onboarding.Offboard:
		st.Phase = itmv1.OnboardingPhaseOffboarding
	case d.Stage == onboarding.Denied:
		st.Phase = itmv1.OnboardingPhaseFailed
	case d.Stage == onboarding.AwaitingApproval:
		st.Phase = itmv1.OnboardingPhaseAwaitingApproval
	case o.Status.Phase == itmv1.OnboardingPhaseActive && d.Stage == onboarding.Active:
		// Active means started and not left: a provider that stops
		// answering, or a device request added later, shows in the
		// conditions without withdrawing the access the person has.
		st.Phase = itmv1.OnboardingPhaseActive
	case len(ps.permanent) > 0:
		st.Phase = itmv1.OnboardingPhaseFailed
	case len(ps.missing) > 0:
		st.Phase = itmv1.OnboardingPhasePending
	case d.Stage == onboarding.Scheduled:
		st.Phase = itmv1.OnboardingPhaseScheduled
	case accountsOK && devicesOK:
		st.Phase = itmv1.OnboardingPhaseActive
	default:
		st.Phase = itmv1.OnboardingPhaseProvisioning
	}

	// AccountsReady.
	switch {
	case !accountsOK:
		reason := "ProvisioningFailed"
		switch {
		case len(ps.blocked) > 0:
			reason = "OffboardingBlocked"
		case len(ps.missing) > 0 && len(ps.transient)+len(ps.permanent) == 0:
			reason = "ProviderNotFound"
		}
		set(itmv1.OnboardingConditionAccountsReady, false, reason, strings.Join(problems, "; "))
	case offboarding && len(ps.skipped) > 0:
		set(itmv1.OnboardingConditionAccountsReady, true, "ForceOffboarded", "skipped by "+itmv1.AnnotationForceOffboard+": "+strings.Join(ps.skipped, ", "))
	case d.Stage == onboarding.AwaitingApproval && len(ps.accounts) == 0:
		set(itmv1.OnboardingConditionAccountsReady, false, "AwaitingApproval", "no account is created before approval")
	case d.Stage == onboarding.Denied && len(ps.accounts) == 0:
		set(itmv1.OnboardingConditionAccountsReady, false, "Denied", "no account is created for a denied request")
	case offboarding || d.Stage == onboarding.AwaitingApproval:
		set(itmv1.OnboardingConditionAccountsReady, true, "Offboarded", fmt.Sprintf("%d account(s) disabled or deleted", len(ps.accounts)))
	case d.Stage == onboarding.Scheduled:
		set(itmv1.OnboardingConditionAccountsReady, true, "CreatedDisabled", fmt.Sprintf("%d account(s) exist, disabled until spec.startDate", len(ps.accounts)))
	default:
		set(itmv1.OnboardingConditionAccountsReady, true, "Provisioned", fmt.Sprintf("%d account(s) provisioned", len(ps.accounts)))
	}
	// DevicesAssigned.
	switch {
	case !devicesOK:
		set(itmv1.OnboardingConditionDevicesAssigned, false, "DeviceUnavailable", strings.Join(ps.unmet, "; "))
	case offboarding && len(ps.held) > 0:
		set(itmv1.OnboardingConditionDevicesAssigned, false, "ReleaseBlocked", strings.Join(ps.held, "; "))
	case offboarding && len(ps.devices) > 0:
		set(itmv1.OnboardingConditionDevicesAssigned, false, "Releasing", "still assigned: "+strings.Join(ps.devices, ", "))
	case offboarding:
		set(itmv1.OnboardingConditionDevicesAssigned, true, "Released", "no device is assigned")
	case d.Stage == onboarding.AwaitingApproval:
		set(itmv1.OnboardingConditionDevicesAssigned, false, "AwaitingApproval", "no device is assigned before approval")
	default:
		set(itmv1.OnboardingConditionDevicesAssigned, true, "Assigned", fmt.Sprintf("%d device(s) assigned", len(ps.devices)))
	}
	// Ready, Reconciling, Stalled (kstatus).
	stalled := len(ps.permanent) > 0 || d.Stage == onboarding.Denied
	switch st.Phase {
	case itmv1.OnboardingPhaseActive:
		if msg := strings.Join(append(problems, ps.unmet...), "; "); msg != "" {
			set("Ready", false, "Degraded", msg)
		} else {
			set("Ready", true, "Active", "accounts provisioned, devices assigned")
		}
	case itmv1.OnboardingPhaseScheduled:
		set("Ready", accountsOK && devicesOK, "Scheduled", d.Why)
	case itmv1.OnboardingPhaseOffboarded:
		set("Ready", true, "Offboarded", d.Why)
	case itmv1.OnboardingPhaseAwaitingApproval:
		set("Ready", false, "AwaitingApproval", d.Why)
	case itmv1.OnboardingPhaseFailed:
		if d.Stage == onboarding.Denied {
			set("Ready", false, "Denied", d.Why+"; nothing is provisioned")
		} else {
			set("Ready", false, "Failed", strings.Join(problems, "; "))
		}
	default:
		msg := strings.Join(append(problems, ps.unmet...), "; ")
		if msg == "" {
			msg = d.Why
		}
		set("Ready", false, string(st.Phase), msg)
	}
	if stalled {
		set("Stalled", true, "NeedsAttention", meta.FindStatusCondition(st.Conditions, "Ready").Message)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, "Stalled")
	}
	if inProgress := st.Phase == itmv1.OnboardingPhaseProvisioning || st.Phase == itmv1.OnboardingPhaseOffboarding || st.Phase == itmv1.OnboardingPhasePending; inProgress {
		set("Reconciling", true, string(st.Phase), meta.FindStatusCondition(st.Conditions, "Ready").Message)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, "Reconciling")
	}
	return st
}

// transition emits events and counts joiners and leavers on a phase change.
func (r *OnboardingReconciler) transition(o *itmv1.OnboardingRequest, from, to itmv1.OnboardingRequestStatus, ps *pass) {
	if from.Phase == to.Phase {
		return
	}
	switch to.Phase {
	case itmv1.OnboardingPhaseActive:
		joiners.Inc()
	case itmv1.OnboardingPhaseOffboarded:
		leavers.Inc()
	}
	if r.Recorder == nil {
		return
	}
	kind := corev1.EventTypeNormal
	if to.Phase == itmv1.OnboardingPhaseFailed || (to.Phase == itmv1.OnboardingPhaseOffboarding && len(ps.blocked) > 0) {
		kind = corev1.EventTypeWarning
	}
	msg := meta.FindStatusCondition(to.Conditions, "Ready").Message
	if len(ps.skipped) > 0 {
		msg += "; skipped by force-offboard: " + strings.Join(ps.skipped, ", ")
	}
	r.Recorder.Eventf(o, nil, kind, string(to.Phase), "Onboarding", "%s", text.Truncate(msg, 1024))
}

// SetupWithManager registers the controller: requests, the providers they
// use, and the devices they hold or wait for.
func (r *OnboardingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// As controller-runtime's default per-item backoff.
	r.retry = workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 1000*time.Second)
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("onboarding").
		For(&itmv1.OnboardingRequest{}, builder.WithPredicates(requestChanged())).
		Watches(&itmv1.AccountProvider{}, handler.EnqueueRequestsFromMapFunc(r.providerToRequests),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, readyChanged()))).
		Watches(&itmv1.Device{}, handler.EnqueueRequestsFromMapFunc(r.deviceToRequests),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Complete(r)
}

// requestChanged passes what a pass reads from the request itself: spec,
// annotations (force-offboard), deletion, the finalizer and an approver's
// decision. The controller's own status writes do not pass: re-running
// every provider call after each of them would change nothing.
func requestChanged() predicate.Predicate {
	decision := func(r *itmv1.OnboardingRequest) [2]metav1.ConditionStatus {
		var d [2]metav1.ConditionStatus
		for i, t := range []string{itmv1.OnboardingConditionApproved, itmv1.OnboardingConditionDenied} {
			if c := meta.FindStatusCondition(r.Status.Conditions, t); c != nil {
				d[i] = c.Status
			}
		}
		return d
	}
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.OnboardingRequest), e.ObjectNew.(*itmv1.OnboardingRequest)
		return o.Generation != n.Generation || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
			!equality.Semantic.DeepEqual(o.Annotations, n.Annotations) || decision(o) != decision(n) ||
			// A finalizer that went missing is put back at once.
			controllerutil.ContainsFinalizer(o, onboarding.Finalizer) != controllerutil.ContainsFinalizer(n, onboarding.Finalizer)
	}}
}

// readyChanged passes an AccountProvider whose Ready condition flipped: a
// provider that comes back unblocks the requests waiting for it.
func readyChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*itmv1.AccountProvider), e.ObjectNew.(*itmv1.AccountProvider)
		return meta.IsStatusConditionTrue(o.Status.Conditions, "Ready") != meta.IsStatusConditionTrue(n.Status.Conditions, "Ready")
	}}
}

func (r *OnboardingReconciler) providerToRequests(ctx context.Context, o client.Object) []reconcile.Request {
	// Requests whose defaults are not fixed yet hear of every provider: one
	// that stops being default, or stops being too many, changes their set.
	p := o.(*itmv1.AccountProvider)
	return r.requestsByIndex(ctx, IndexOnboardingProvider, []string{p.Name, ProviderKeyDefault})
}

// deviceToRequests enqueues the request of the device's assignee, and every
// request still waiting for a device (inventory changed).
func (r *OnboardingReconciler) deviceToRequests(ctx context.Context, o client.Object) []reconcile.Request {
	d := o.(*itmv1.Device)
	var out []reconcile.Request
	if d.Spec.Assignee != "" {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: d.Spec.Assignee}})
	}
	return append(out, r.requestsByIndex(ctx, IndexOnboardingWaiting, []string{"true"})...)
}

func (r *OnboardingReconciler) requestsByIndex(ctx context.Context, index string, keys []string) []reconcile.Request {
	var out []reconcile.Request
	for _, k := range keys {
		var list itmv1.OnboardingRequestList
		if err := r.List(ctx, &list, client.MatchingFields{index: k}, client.UnsafeDisableDeepCopy); err != nil {
			logf.FromContext(ctx).Error(err, "list OnboardingRequests", "index", index, "key", k)
			continue
		}
		for i := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return out
}
