package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// Annotations on the enrolment Secret recording what its url and ca.crt
// hold, so they can be kept current without reading the Secret's data.
const (
	annotationURL    = "itmanager.io/url"
	annotationCAHash = "itmanager.io/ca-sha256"
)

// EnrolmentReconciler enrols the agent of every Device with spec.agent.enabled:
// the Secret <device>-agent (url, token, ca.crt) for the agent and the Lease
// <device> that the check-in service renews. The operator keeps only the
// token's hash (on both objects); Secrets are cached as metadata only.
// Disabling the agent or deleting the Device deletes both.
type EnrolmentReconciler struct {
	client.Client
	// Workers is the number of concurrent reconciles (default 1).
	Workers int
	// APIReader reads from the API server, bypassing the cache: a token is
	// rotated only when a live read confirms the enrolment is broken, never
	// because the cache has not yet seen this controller's own last write.
	APIReader        client.Reader
	Recorder         recorder.EventRecorder
	DevicesNamespace string
	// URL is the check-in service's base URL as agents reach it; each
	// enrolment Secret holds its device's endpoint under it.
	URL string
	// CA returns the PEM CA bundle agents verify the service with (nil: the
	// system roots).
	CA func(context.Context) ([]byte, error)
}

// +kubebuilder:rbac:groups=itmanager.io,resources=devices,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=itmanager-devices,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=itmanager-devices,resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile enrols, keeps current, or revokes one Device's agent.
func (r *EnrolmentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	dev := &itmv1.Device{}
	err := r.Get(ctx, req.NamespacedName, dev)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if apierrors.IsNotFound(err) || dev.DeletionTimestamp != nil || dev.Spec.Agent == nil || !dev.Spec.Agent.Enabled {
		// Revoke at once rather than wait for the garbage collector: the
		// check-in service already refuses the token, this removes it.
		return ctrl.Result{}, r.revoke(ctx, req.Name, dev)
	}
	log := ctrl.LoggerFrom(ctx).WithValues("Device", klog.KObj(dev))

	lease, secret, err := r.enrolmentState(ctx, r.Client, dev)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !enrolled(dev, lease, secret) {
		if lease, secret, err = r.enrolmentState(ctx, r.APIReader, dev); err != nil {
			return ctrl.Result{}, err
		}
	}
	if lease != nil && !metav1.IsControlledBy(lease, dev) {
		// Left over from an earlier Device of the same name: never adopt
		// it (its token belongs to that device).
		if err := r.deleteIfManaged(ctx, lease); err != nil {
			return ctrl.Result{}, err
		}
		lease = nil
	}

	ca, err := r.CA(ctx)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("check-in CA for Device %s: %w", dev.Name, err)
	}
	if secret != nil && secret.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue {
		r.event(dev, corev1.EventTypeWarning, itmv1.ReasonEnrolmentConflict, "Secret %s/%s exists and was not created by itmanager; the agent cannot be enrolled",
			r.DevicesNamespace, secretName(dev.Name))
		return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("secret %s/%s was not created by itmanager", r.DevicesNamespace, secretName(dev.Name)))
	}
	if !enrolled(dev, lease, secret) {
		rotated := lease != nil || secret != nil
		secretVersion := ""
		if secret != nil {
			secretVersion = secret.ResourceVersion
		}
		if err := r.enrol(ctx, dev, lease, secretVersion, ca); err != nil {
			return ctrl.Result{}, err
		}
		// A first enrolment is recorded by the Secret itself (a bulk import
		// of a fleet must not flood the API server with events); a rotation
		// invalidates a credential, which an admin must be able to see.
		if rotated {
			r.event(dev, corev1.EventTypeNormal, itmv1.ReasonAgentTokenRotated, "enrolment Secret %s/%s rewritten with a new token; the old one no longer works",
				r.DevicesNamespace, secretName(dev.Name))
		}
		log.Info("Enrolled agent", "secret", klog.KRef(r.DevicesNamespace, secretName(dev.Name)), "rotated", rotated)
		return ctrl.Result{}, nil
	}
	if secret.Annotations[annotationURL] != r.endpoint(dev.Name) || secret.Annotations[annotationCAHash] != caHash(ca) {
		// The service moved or its CA rotated: update url and ca.crt, and
		// leave the token alone (it is never read back).
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"annotations": map[string]string{annotationURL: r.endpoint(dev.Name), annotationCAHash: caHash(ca)}},
			"data":     map[string][]byte{checkin.SecretKeyURL: []byte(r.endpoint(dev.Name)), checkin.SecretKeyCA: ca},
		})
		if err != nil {
			return ctrl.Result{}, err
		}
		target := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.DevicesNamespace, Name: secretName(dev.Name)}}
		if err := r.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return ctrl.Result{}, fmt.Errorf("update enrolment Secret of Device %s: %w", dev.Name, err)
		}
		log.Info("Updated enrolment Secret with the current check-in URL and CA")
	}
	return ctrl.Result{}, nil
}

func secretName(device string) string { return device + "-agent" }

// endpoint is the device's check-in URL, so the enrolment Secret alone
// configures an agent.
func (r *EnrolmentReconciler) endpoint(device string) string {
	return checkin.Endpoint(r.URL, device)
}

// enrolmentState reads the device's Lease and (the metadata of) its Secret;
// either is nil when absent.
func (r *EnrolmentReconciler) enrolmentState(ctx context.Context, reader client.Reader, dev *itmv1.Device) (*coordinationv1.Lease, *metav1.PartialObjectMetadata, error) {
	lease := &coordinationv1.Lease{}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: r.DevicesNamespace, Name: dev.Name}, lease); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, nil, err
		}
		lease = nil
	}
	secret := &metav1.PartialObjectMetadata{}
	secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := reader.Get(ctx, types.NamespacedName{Namespace: r.DevicesNamespace, Name: secretName(dev.Name)}, secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, nil, err
		}
		secret = nil
	}
	return lease, secret, nil
}

// enrolled reports whether the Lease and the Secret belong to dev and carry
// the same token hash.
func enrolled(dev *itmv1.Device, lease *coordinationv1.Lease, secret *metav1.PartialObjectMetadata) bool {
	if lease == nil || secret == nil || !metav1.IsControlledBy(lease, dev) || !metav1.IsControlledBy(secret, dev) {
		return false
	}
	hash := lease.Annotations[checkin.AnnotationTokenHash]
	return hash != "" && secret.Annotations[checkin.AnnotationTokenHash] == hash
}

func caHash(ca []byte) string {
	sum := sha256.Sum256(ca)
	return hex.EncodeToString(sum[:])
}

func ownerRef(dev *itmv1.Device) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: itmv1.GroupVersion.String(), Kind: "Device", Name: dev.Name, UID: dev.UID,
		Controller: ptr.To(true),
	}
}

// enrol issues a new token: the Secret first, then the Lease's hash. A crash
// in between leaves hashes that differ, which the next pass repairs by
// issuing yet another token; an agent never holds a token whose hash is not
// where the service looks.
func (r *EnrolmentReconciler) enrol(ctx context.Context, dev *itmv1.Device, lease *coordinationv1.Lease, secretVersion string, ca []byte) error {
	token, hash, err := checkin.NewToken()
	if err != nil {
		return err
	}
	labels := map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.DevicesNamespace, Name: secretName(dev.Name), Labels: labels, ResourceVersion: secretVersion,
			Annotations: map[string]string{
				checkin.AnnotationTokenHash: hash, annotationURL: r.endpoint(dev.Name), annotationCAHash: caHash(ca),
			},
			OwnerReferences: []metav1.OwnerReference{ownerRef(dev)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			checkin.SecretKeyURL: []byte(r.endpoint(dev.Name)), checkin.SecretKeyToken: []byte(token), checkin.SecretKeyCA: ca,
		},
	}
	if secretVersion != "" {
		err = r.Update(ctx, secret)
	} else {
		err = r.Create(ctx, secret)
	}
	if err != nil {
		return fmt.Errorf("write enrolment Secret of Device %s: %w", dev.Name, err)
	}

	if lease == nil {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Namespace: r.DevicesNamespace, Name: dev.Name, Labels: labels,
			Annotations:     map[string]string{checkin.AnnotationTokenHash: hash},
			OwnerReferences: []metav1.OwnerReference{ownerRef(dev)},
		}}
		// Created without a renew time: the device has not checked in.
		if err := r.Create(ctx, lease); err != nil {
			return fmt.Errorf("create Lease of Device %s: %w", dev.Name, err)
		}
		return nil
	}
	base := lease.DeepCopy()
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[checkin.AnnotationTokenHash] = hash
	if err := r.Patch(ctx, lease, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("record token hash on Lease of Device %s: %w", dev.Name, err)
	}
	return nil
}

// revoke deletes the Lease and the Secret of a Device's agent, if itmanager
// created them. (The Lease is read typed and the Secret as metadata, each
// from the one informer the manager keeps for it.)
func (r *EnrolmentReconciler) revoke(ctx context.Context, name string, dev *itmv1.Device) error {
	lease := &coordinationv1.Lease{}
	secret := &metav1.PartialObjectMetadata{}
	secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	deleted := false
	for _, item := range []struct {
		obj client.Object
		key types.NamespacedName
	}{
		{lease, types.NamespacedName{Namespace: r.DevicesNamespace, Name: name}},
		{secret, types.NamespacedName{Namespace: r.DevicesNamespace, Name: secretName(name)}},
	} {
		if err := r.Get(ctx, item.key, item.obj); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		if item.obj.GetLabels()[itmv1.LabelManagedBy] != itmv1.ManagedByValue {
			continue
		}
		if err := r.deleteIfManaged(ctx, item.obj); err != nil {
			return fmt.Errorf("revoke agent of Device %s: %w", name, err)
		}
		deleted = true
	}
	if deleted && dev.UID != "" && dev.DeletionTimestamp == nil {
		r.event(dev, corev1.EventTypeNormal, itmv1.ReasonAgentRevoked, "agent disabled: enrolment Secret and Lease deleted; the token no longer works")
	}
	return nil
}

func (r *EnrolmentReconciler) deleteIfManaged(ctx context.Context, obj client.Object) error {
	if obj.GetLabels()[itmv1.LabelManagedBy] != itmv1.ManagedByValue {
		return fmt.Errorf("%s/%s exists and was not created by itmanager; refusing to use it", obj.GetNamespace(), obj.GetName())
	}
	return client.IgnoreNotFound(r.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}))
}

func (r *EnrolmentReconciler) event(dev *itmv1.Device, kind, reason, format string, args ...any) {
	kit.Emitter{Recorder: r.Recorder}.Eventf(dev, nil, kind, reason, "Enrol", format, args...)
}
