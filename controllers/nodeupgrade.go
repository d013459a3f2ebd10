package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/rollout"
	"github.com/itmanager-io/itmanager/internal/text"
)

// Node upgrade marks and defaults.
const (
	// AnnotationCordonedBy marks a Node itmanager cordoned, with the window
	// that did it: only such a Node is ever uncordoned by itmanager.
	AnnotationCordonedBy = "itmanager.io/cordoned-by"
	// CordonFieldManager owns spec.unschedulable and the mark while
	// itmanager holds the cordon; giving the fields up uncordons.
	CordonFieldManager = "itmanager-cordon"
	// LabelUpgradeDevice labels upgrade Jobs with their Device.
	LabelUpgradeDevice = "itmanager.io/device"
	// LabelWindow labels upgrade Jobs with their MaintenanceWindow.
	LabelWindow = "itmanager.io/maintenance-window"
	// VersionFieldManager owns the Node label itmanager.io/os-version when
	// itmanager set it from an upgrade Job's version report.
	VersionFieldManager = "itmanager-os-version"

	// DefaultUpgradesNamespace is where node upgrade Jobs run: Pod Security
	// privileged, and nothing else runs there.
	DefaultUpgradesNamespace = "itmanager-upgrades"
	// NodeUpgradeServiceAccount runs the upgrade Jobs, with no token
	// mounted: the image needs the node, not the API.
	NodeUpgradeServiceAccount = "itmanager-node-upgrade"
	// UpgradeContainer is the name of the upgrade Job's one container,
	// whose termination message may carry the version report.
	UpgradeContainer = "upgrade"
	// HostRootMount is where the node's root filesystem is mounted in the
	// upgrade container, so the image can chroot into it.
	HostRootMount = "/host"

	defaultDrainTimeout = 30 * time.Minute
)

// nodeStep is where a node upgrade stands after one pass.
type nodeStep struct {
	// blocked says what holds the drain (pods, PDBs), for status.blockedBy.
	blocked   string
	requeueAt time.Time
}

// progressNode drives one Node device's upgrade one step further: cordon,
// drain through the Eviction API, run the upgrade Job on the node, wait
// for the Job and for the observed version, uncordon. Every step reads the
// world first, so it is idempotent and resumes after a restart.
func (r *MaintenanceWindowReconciler) progressNode(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, now time.Time) (nodeStep, error) {
	poll := nodeStep{requeueAt: now.Add(r.drainPoll())}
	node := &corev1.Node{}
	if err := r.Get(ctx, types.NamespacedName{Name: d.Spec.NodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return nodeStep{}, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed, "node "+d.Spec.NodeName+" is gone", now)
		}
		return poll, err
	}
	u := d.Status.Upgrade

	// Cordon, unless someone else already did (then it is theirs to undo).
	if !node.Spec.Unschedulable {
		if err := r.cordon(ctx, node, mw.Name, true); err != nil {
			return poll, err
		}
	}

	job := &batchv1.Job{}
	jobKey := types.NamespacedName{Namespace: r.upgradesNamespace(), Name: upgradeJobName(d)}
	err := r.Get(ctx, jobKey, job)
	switch {
	case apierrors.IsNotFound(err):
		// Drain first; the Job only starts on an empty node.
		remaining, blocked, err := r.drain(ctx, mw, node)
		if err != nil {
			return poll, err
		}
		drainTimeout := defaultDrainTimeout
		if mw.Spec.Drain.Timeout != nil {
			drainTimeout = mw.Spec.Drain.Timeout.Duration
		}
		if remaining > 0 {
			if u.StartedAt != nil && !now.Before(u.StartedAt.Add(drainTimeout)) {
				msg := fmt.Sprintf("drain did not finish within %s: %s", drainTimeout, cmp.Or(blocked, fmt.Sprintf("%d pods remain", remaining)))
				return nodeStep{}, errors.Join(r.uncordonIfOurs(ctx, node), r.finish(ctx, mw, d, itmv1.UpgradeStateFailed, msg+"; never forced, the node is uncordoned", now))
			}
			return nodeStep{blocked: blocked, requeueAt: poll.requeueAt}, r.setMessage(ctx, d, fmt.Sprintf("draining: %d pods remain%s", remaining, prefixed("; ", blocked)))
		}
		if err := r.Create(ctx, r.upgradeJob(mw, d, now)); err != nil && !apierrors.IsAlreadyExists(err) {
			return poll, fmt.Errorf("create upgrade Job for Device %s: %w", d.Name, err)
		}
		return poll, r.setMessage(ctx, d, "drained; upgrade Job "+jobKey.Name+" started")
	case err != nil:
		return poll, err
	}

	switch {
	case jobCondition(job, batchv1.JobFailed):
		return nodeStep{}, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed,
			fmt.Sprintf("upgrade Job %s failed: %s; the node is left cordoned for inspection", job.Name, jobFailure(job)), now)
	case jobCondition(job, batchv1.JobComplete):
		refused, err := r.applyVersionReport(ctx, job, node)
		if err != nil {
			return poll, err
		}
		if refused != "" {
			return nodeStep{}, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed,
				fmt.Sprintf("upgrade Job %s succeeded but its version report was refused: %s; the node is left cordoned for inspection", job.Name, refused), now)
		}
		if rollout.NeedsUpgrade(d) {
			// The Job is done; the node reports its new version when it is back.
			return poll, r.setMessage(ctx, d, "upgrade Job succeeded; waiting for the node to report "+d.Spec.OS.TargetVersion)
		}
		if err := r.uncordonIfOurs(ctx, node); err != nil {
			return poll, err
		}
		return nodeStep{}, r.finish(ctx, mw, d, itmv1.UpgradeStateSucceeded, "upgraded to "+d.Spec.OS.TargetVersion, now)
	}
	return poll, r.setMessage(ctx, d, "upgrade Job "+job.Name+" running")
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// cordon applies (or gives up) spec.unschedulable and the mark under
// CordonFieldManager. Giving them up removes them only if no one else set
// them meanwhile: a node someone else cordoned stays cordoned.
func (r *MaintenanceWindowReconciler) cordon(ctx context.Context, node *corev1.Node, window string, on bool) error {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion("v1")
	u.SetKind("Node")
	u.SetName(node.Name)
	u.SetUID(node.UID)
	if on {
		u.SetAnnotations(map[string]string{AnnotationCordonedBy: window})
		u.Object["spec"] = map[string]any{"unschedulable": true}
	}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(CordonFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("cordon=%t Node %s: %w", on, node.Name, err)
	}
	return nil
}

// uncordonIfOurs uncordons a node only if itmanager's mark is on it. The
// mark is read live: a cache that has not yet seen it would leave the node
// cordoned for good, as nothing looks at it again.
func (r *MaintenanceWindowReconciler) uncordonIfOurs(ctx context.Context, node *corev1.Node) error {
	live := &corev1.Node{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(node), live); err != nil {
		return client.IgnoreNotFound(err)
	}
	if _, ours := live.Annotations[AnnotationCordonedBy]; !ours {
		return nil
	}
	return r.cordon(ctx, live, "", false)
}

// drain evicts the node's pods as kubectl drain would, never forcing: mirror
// pods and finished pods are skipped, DaemonSet pods are left when
// ignoreDaemonSets (else they block), pods without a controller or (unless
// allowed) with emptyDir data block. It returns how many pods remain and
// what blocks them.
func (r *MaintenanceWindowReconciler) drain(ctx context.Context, mw *itmv1.MaintenanceWindow, node *corev1.Node) (int, string, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.MatchingFields{"spec.nodeName": node.Name}); err != nil {
		return 0, "", fmt.Errorf("list pods on Node %s: %w", node.Name, err)
	}
	ignoreDS := mw.Spec.Drain.IgnoreDaemonSets == nil || *mw.Spec.Drain.IgnoreDaemonSets
	remaining := 0
	var blocked []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		owner := metav1.GetControllerOf(p)
		if owner != nil && owner.Kind == "DaemonSet" {
			if ignoreDS {
				continue
			}
			remaining++
			blocked = append(blocked, fmt.Sprintf("DaemonSet pod %s/%s (drain.ignoreDaemonSets is false)", p.Namespace, p.Name))
			continue
		}
		// An upgrade Job's own pod is not drained away from its node.
		if p.Namespace == r.upgradesNamespace() && p.Labels[LabelUpgradeDevice] != "" {
			continue
		}
		remaining++
		if p.DeletionTimestamp != nil {
			continue // evicted, terminating
		}
		switch {
		case owner == nil:
			blocked = append(blocked, fmt.Sprintf("pod %s/%s has no controller; itmanager never deletes it", p.Namespace, p.Name))
			continue
		case usesEmptyDir(p) && !mw.Spec.Drain.DeleteEmptyDirData:
			blocked = append(blocked, fmt.Sprintf("pod %s/%s has emptyDir data (drain.deleteEmptyDirData is false)", p.Namespace, p.Name))
			continue
		}
		// The API server may hold an eviction while a budget's status is
		// being computed; a drain must not hold the worker for that long.
		evictCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.SubResource("eviction").Create(evictCtx, p, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}})
		cancel()
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err) || errors.Is(err, context.DeadlineExceeded) || apierrors.IsTimeout(err):
			blocked = append(blocked, r.pdbBlocking(ctx, p))
		default:
			return remaining, "", fmt.Errorf("evict pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	slices.Sort(blocked)
	msg := strings.Join(blocked, "; ")
	return remaining, text.Truncate(msg, maxUpgradeMessage), nil
}

// pdbBlocking names the PodDisruptionBudgets that cover a pod whose
// eviction was refused.
func (r *MaintenanceWindowReconciler) pdbBlocking(ctx context.Context, p *corev1.Pod) string {
	pdbs := &policyv1.PodDisruptionBudgetList{}
	var hit []string
	if err := r.APIReader.List(ctx, pdbs, client.InNamespace(p.Namespace)); err == nil {
		for _, b := range pdbs.Items {
			sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
			if err == nil && sel.Matches(labels.Set(p.Labels)) {
				hit = append(hit, p.Namespace+"/"+b.Name)
			}
		}
	}
	if len(hit) == 0 {
		return fmt.Sprintf("pod %s/%s: eviction refused by a disruption budget", p.Namespace, p.Name)
	}
	return fmt.Sprintf("pod %s/%s: eviction refused by PodDisruptionBudget %s", p.Namespace, p.Name, strings.Join(hit, ", "))
}

func usesEmptyDir(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.EmptyDir != nil })
}

// upgradeJobName is one Job per device and attempt.
func upgradeJobName(d *itmv1.Device) string {
	return names.Derive("itm-upgrade-", d.Name+"-"+strconv.Itoa(int(d.Status.Upgrade.Attempts)), 63)
}

// upgradeJob runs nodeUpgrade on the node, tolerating its cordon, with the
// target version in its environment, bounded by what is left of
// upgradeTimeout. It runs as system-upgrade-controller's Jobs do: in the
// upgrades namespace (Pod Security privileged), privileged, in the host's
// PID namespace with the node's root filesystem at /host, so the image can
// chroot into the node; as a ServiceAccount of its own with no token, so
// the image holds no API credential.
func (r *MaintenanceWindowReconciler) upgradeJob(mw *itmv1.MaintenanceWindow, d *itmv1.Device, now time.Time) *batchv1.Job {
	left := rollout.UpgradeTimeout(&mw.Spec)
	if d.Status.Upgrade.StartedAt != nil {
		left -= now.Sub(d.Status.Upgrade.StartedAt.Time)
	}
	labels := map[string]string{
		"app.kubernetes.io/managed-by": "itmanager", LabelUpgradeDevice: d.Name, LabelWindow: mw.Name,
	}
	nu := mw.Spec.NodeUpgrade
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.upgradesNamespace(), Name: upgradeJobName(d), Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: itmv1.GroupVersion.String(), Kind: "MaintenanceWindow", Name: mw.Name, UID: mw.UID, Controller: ptr.To(true),
			}},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](0),
			ActiveDeadlineSeconds: ptr.To(max(int64(left/time.Second), 1)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:                     d.Spec.NodeName,
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           NodeUpgradeServiceAccount,
					AutomountServiceAccountToken: ptr.To(false),
					HostPID:                      true,
					// The node is cordoned (and may be tainted): the upgrade
					// must run there anyway.
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Volumes: []corev1.Volume{{Name: "host-root", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/", Type: ptr.To(corev1.HostPathDirectory)},
					}}},
					Containers: []corev1.Container{{
						Name: UpgradeContainer, Image: nu.Image, Command: nu.Command, Args: nu.Args,
						Env: []corev1.EnvVar{
							{Name: "TARGET_VERSION", Value: d.Spec.OS.TargetVersion},
							{Name: "NODE_NAME", Value: d.Spec.NodeName},
						},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
						VolumeMounts:    []corev1.VolumeMount{{Name: "host-root", MountPath: HostRootMount}},
						// The image reports the version it installed by writing
						// itmanager.io/os-version=<version> to /dev/termination-log.
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}
}

func (r *MaintenanceWindowReconciler) upgradesNamespace() string {
	return cmp.Or(r.UpgradesNamespace, DefaultUpgradesNamespace)
}

// applyVersionReport sets the Node label itmanager.io/os-version to the
// version a succeeded upgrade Job reported in its termination message, so
// Node discovery observes it. It returns why a report was refused (the
// label is then left alone); no report at all is not a refusal: the node's
// own report decides.
func (r *MaintenanceWindowReconciler) applyVersionReport(ctx context.Context, job *batchv1.Job, node *corev1.Node) (string, error) {
	msg, err := r.terminationMessage(ctx, job)
	if err != nil {
		return "", err
	}
	version, err := rollout.ParseVersionReport(msg)
	switch {
	case errors.Is(err, rollout.ErrNoReport):
		return "", nil
	case err != nil:
		return err.Error(), nil
	case node.Labels[itmv1.LabelOSVersion] == version:
		return "", nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion("v1")
	u.SetKind("Node")
	u.SetName(node.Name)
	u.SetUID(node.UID)
	u.SetLabels(map[string]string{itmv1.LabelOSVersion: version})
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(VersionFieldManager), client.ForceOwnership); err != nil {
		return "", fmt.Errorf("label Node %s with the reported version: %w", node.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Node reported its version through the upgrade Job", "Node", klog.KObj(node), "version", version, "job", job.Name)
	return "", nil
}

// terminationMessage is the termination message of the upgrade container
// of the Job's succeeded pod; empty when there is none.
func (r *MaintenanceWindowReconciler) terminationMessage(ctx context.Context, job *batchv1.Job) (string, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(job.Namespace),
		client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)}); err != nil {
		return "", fmt.Errorf("list the pods of upgrade Job %s: %w", job.Name, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded {
			continue
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == UpgradeContainer && c.State.Terminated != nil {
				return c.State.Terminated.Message, nil
			}
		}
	}
	return "", nil
}

func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func jobFailure(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return strings.TrimSpace(c.Reason + " " + c.Message)
		}
	}
	return "unknown"
}

// setMessage records a node upgrade's current step on the device, when it
// changed.
func (r *MaintenanceWindowReconciler) setMessage(ctx context.Context, d *itmv1.Device, msg string) error {
	msg = text.Truncate(msg, maxUpgradeMessage)
	if d.Status.Upgrade.Message == msg {
		return nil
	}
	base := d.DeepCopy()
	d.Status.Upgrade.Message = msg
	if err := r.Status().Patch(ctx, d, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("record the upgrade step of Device %s: %w", d.Name, err)
	}
	return nil
}
