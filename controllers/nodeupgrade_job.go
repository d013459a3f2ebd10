package controllers

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/names"
	"github.com/itmanager-io/itmanager/internal/rollout"
)

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

// labelVersion sets the Node label itmanager.io/os-version to the version
// a succeeded upgrade Job reported in its termination message, so Node
// discovery observes it.
func (r *MaintenanceWindowReconciler) labelVersion(ctx context.Context, job *batchv1.Job, node *corev1.Node, version string) error {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion("v1")
	u.SetKind("Node")
	u.SetName(node.Name)
	u.SetUID(node.UID)
	u.SetLabels(map[string]string{itmv1.LabelOSVersion: version})
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(VersionFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("label Node %s with the reported version: %w", node.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Node reported its version through the upgrade Job", "Node", klog.KObj(node), "version", version, "job", job.Name)
	return nil
}

// terminationMessage is the termination message of the upgrade container
// of the Job's pod that ended in phase (succeeded: its version report;
// failed: what the image said went wrong); empty when there is none.
func (r *MaintenanceWindowReconciler) terminationMessage(ctx context.Context, job *batchv1.Job, phase corev1.PodPhase) (string, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(job.Namespace),
		client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)}); err != nil {
		return "", fmt.Errorf("list the pods of upgrade Job %s: %w", job.Name, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != phase {
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
