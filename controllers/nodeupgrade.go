package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/nodeupgrade"
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
)

// nodeStep is where a node upgrade stands after one pass.
type nodeStep struct {
	// blocked says what holds the drain (pods, PDBs), for status.blockedBy.
	blocked   string
	requeueAt time.Time
}

// maxNodeSteps bounds one pass: cordon, observe, evict, read the mark,
// label, and the step that ends the pass.
const maxNodeSteps = 8

// progressNode drives one Node device's upgrade one step further. It
// gathers the facts, asks nodeupgrade.Next what to do, does it, and asks
// again with what the step changed, until a step ends the pass (wait,
// Job created, finished, failed). The decisions are nodeupgrade's; this
// is the I/O.
func (r *MaintenanceWindowReconciler) progressNode(ctx context.Context, mw *itmv1.MaintenanceWindow, d *itmv1.Device, now time.Time) (nodeStep, error) {
	poll := nodeStep{requeueAt: now.Add(r.drainPoll())}
	node := &corev1.Node{}
	f := nodeupgrade.Facts{Now: now, NodeName: d.Spec.NodeName, NodeFound: true, NeedsUpgrade: rollout.NeedsUpgrade(d)}
	if err := r.Get(ctx, types.NamespacedName{Name: d.Spec.NodeName}, node); err != nil {
		if !apierrors.IsNotFound(err) {
			return poll, err
		}
		f.NodeFound = false
	}
	_, ours := node.Annotations[AnnotationCordonedBy]
	f.Cordon = nodeupgrade.CordonFacts{Unschedulable: node.Spec.Unschedulable, Ours: ours}
	f.NodeVersion = node.Labels[itmv1.LabelOSVersion]
	if d.Spec.OS != nil {
		f.TargetVersion = d.Spec.OS.TargetVersion
	}
	if u := d.Status.Upgrade; u != nil && u.StartedAt != nil {
		f.StartedAt = &u.StartedAt.Time
	}
	f.DrainTimeout = nodeupgrade.DrainTimeout(&mw.Spec.Drain)
	f.Job.Name = upgradeJobName(d)

	var job *batchv1.Job
	var drain *drainPass
	for range maxNodeSteps {
		s := nodeupgrade.Next(f)
		switch s.Action {
		case nodeupgrade.Cordon:
			if err := r.cordon(ctx, node, mw.Name, true); err != nil {
				return poll, err
			}
			f.Cordon.Unschedulable, f.Cordon.Ours = true, true
			// The pods are listed once the node is cordoned.
			f.Job.Observed = false
		case nodeupgrade.Observe:
			var err error
			if job, drain, err = r.observeUpgrade(ctx, mw, node, &f); err != nil {
				return poll, err
			}
		case nodeupgrade.EvictPods:
			if err := r.evict(ctx, drain, s.Pods, f.Pods); err != nil {
				return poll, err
			}
		case nodeupgrade.CreateJob:
			if err := r.Create(ctx, r.upgradeJob(mw, d, now)); err != nil && !apierrors.IsAlreadyExists(err) {
				return poll, fmt.Errorf("create upgrade Job for Device %s: %w", d.Name, err)
			}
			return poll, r.setMessage(ctx, d, s.Message)
		case nodeupgrade.LabelNode:
			if err := r.labelVersion(ctx, job, node, s.Version); err != nil {
				return poll, err
			}
			f.NodeVersion = s.Version
		case nodeupgrade.ReadCordon:
			// The mark is read live: a cache that has not yet seen it would
			// leave the node cordoned for good, as nothing looks at it again.
			live := &corev1.Node{}
			err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(node), live)
			if client.IgnoreNotFound(err) != nil {
				return poll, err
			}
			_, ours := live.Annotations[AnnotationCordonedBy]
			f.Cordon.Ours, f.Cordon.Live = ours && err == nil, true
			if err == nil {
				node = live
			}
		case nodeupgrade.Wait:
			return nodeStep{blocked: s.Blocked, requeueAt: poll.requeueAt}, r.setMessage(ctx, d, s.Message)
		case nodeupgrade.Finish:
			// A success is recorded only once the node is back.
			if s.Uncordon {
				if err := r.cordon(ctx, node, "", false); err != nil {
					return poll, err
				}
			}
			return nodeStep{}, r.finish(ctx, mw, d, itmv1.UpgradeStateSucceeded, s.Message, now)
		case nodeupgrade.Fail:
			// A failure is recorded even when giving the node back failed.
			var uerr error
			if s.Uncordon {
				uerr = r.cordon(ctx, node, "", false)
			}
			ctrl.LoggerFrom(ctx).V(1).Info("Node upgrade failed", "Device", klog.KObj(d), "reason", s.Reason)
			return nodeStep{}, errors.Join(uerr, r.finish(ctx, mw, d, itmv1.UpgradeStateFailed, s.Message, now))
		}
	}
	return poll, fmt.Errorf("the upgrade of Device %s did not settle within %d steps", d.Name, maxNodeSteps)
}

// observeUpgrade looks the upgrade Job up and gathers what the next
// decision needs: with no Job, the node's pods classified for the drain;
// with a completed one, its version report.
func (r *MaintenanceWindowReconciler) observeUpgrade(ctx context.Context, mw *itmv1.MaintenanceWindow, node *corev1.Node, f *nodeupgrade.Facts) (*batchv1.Job, *drainPass, error) {
	job := &batchv1.Job{}
	err := r.Get(ctx, types.NamespacedName{Namespace: r.upgradesNamespace(), Name: f.Job.Name}, job)
	switch {
	case apierrors.IsNotFound(err):
		f.Job.Observed = true
		if !f.Cordon.Unschedulable {
			// The next step is the cordon; the pods are listed after it.
			return nil, nil, nil
		}
		drain, err := r.drainPods(ctx, mw, node)
		if err != nil {
			return nil, nil, err
		}
		f.Pods = drain.pods
		return nil, drain, nil
	case err != nil:
		return nil, nil, err
	}
	f.Job = nodeupgrade.JobFacts{Observed: true, Exists: true, Name: job.Name,
		Failed: jobCondition(job, batchv1.JobFailed), Failure: jobFailure(job), Complete: jobCondition(job, batchv1.JobComplete)}
	if f.Job.Complete && !f.Job.Failed {
		if f.Job.Report, err = r.terminationMessage(ctx, job, corev1.PodSucceeded); err != nil {
			return nil, nil, err
		}
	}
	if f.Job.Failed {
		// The Job's condition only says it failed (BackoffLimitExceeded); the
		// image's own termination message says why.
		said, err := r.terminationMessage(ctx, job, corev1.PodFailed)
		if err != nil {
			return nil, nil, err
		}
		if said = strings.TrimSpace(said); said != "" {
			f.Job.Failure += "; the upgrade container said: " + text.Truncate(said, 512)
		}
	}
	return job, nil, nil
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

// setMessage records a node upgrade's current step on the device, when it
// changed.
func (r *MaintenanceWindowReconciler) setMessage(ctx context.Context, d *itmv1.Device, msg string) error {
	if d.Status.Upgrade == nil {
		return nil
	}
	base := d.DeepCopy()
	d.Status.Upgrade.Message = text.Truncate(msg, nodeupgrade.MaxMessage)
	if _, err := r.statusWriters().upgrades.Write(ctx, base, d); err != nil {
		return fmt.Errorf("record the upgrade step of Device %s: %w", d.Name, err)
	}
	return nil
}
