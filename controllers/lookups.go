package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin"
	"github.com/itmanager-io/itmanager/internal/device"
	"github.com/itmanager-io/itmanager/internal/index"
)

// Lookups shared by the Device and AccessPolicy controllers: both judge a
// device by the same live facts.

// RenewTime is the device's live check-in; nil when it never checked in.
func RenewTime(ctx context.Context, c client.Reader, devicesNamespace string, dev *itmv1.Device) (*time.Time, error) {
	key, ok := device.LeaseKey(devicesNamespace, dev)
	if !ok {
		return nil, nil
	}
	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, key, lease); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if lease.Spec.RenewTime == nil {
		return nil, nil
	}
	return &lease.Spec.RenewTime.Time, nil
}

// AgentEnrolment says, for a Device whose agent is enabled, why its
// enrolment is not done yet (unenrolled: its Lease is missing, not its own,
// or has no token hash yet, or its enrolment Secret is missing) or why it
// cannot be done (conflict: the enrolment Secret's name is held by a Secret
// itmanager did not create, whatever the Lease says). Both are empty for an
// enrolled agent and for a device without one. Only metadata is read, from
// the cache.
func AgentEnrolment(ctx context.Context, c client.Reader, devicesNamespace string, dev *itmv1.Device) (unenrolled, conflict string, err error) {
	if dev.Spec.Class == itmv1.DeviceClassNode || dev.Spec.Agent == nil || !dev.Spec.Agent.Enabled {
		return "", "", nil
	}
	secret := &metav1.PartialObjectMetadata{}
	secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	secretFound := false
	switch err := c.Get(ctx, types.NamespacedName{Namespace: devicesNamespace, Name: secretName(dev.Name)}, secret); {
	case err == nil && secret.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue:
		return "", fmt.Sprintf("Secret %s/%s exists and was not created by itmanager; the agent cannot be enrolled until it is removed",
			devicesNamespace, secretName(dev.Name)), nil
	case err == nil:
		secretFound = true
	case !apierrors.IsNotFound(err):
		return "", "", err
	}
	lease := &coordinationv1.Lease{}
	switch err := c.Get(ctx, types.NamespacedName{Namespace: devicesNamespace, Name: dev.Name}, lease); {
	case err == nil && secretFound && metav1.IsControlledBy(lease, dev) && lease.Annotations[checkin.AnnotationTokenHash] != "":
		return "", "", nil
	case err != nil && !apierrors.IsNotFound(err):
		return "", "", err
	}
	return fmt.Sprintf("the agent's enrolment (Lease and Secret %s/%s) is not done yet", devicesNamespace, secretName(dev.Name)), "", nil
}

// enrolmentSecretDevice maps a Secret named like an enrolment Secret in the
// devices' namespace to the Device of that name.
func enrolmentSecretDevice(devicesNamespace string, o client.Object) []reconcile.Request {
	if o.GetNamespace() != devicesNamespace {
		return nil
	}
	device, ok := strings.CutSuffix(o.GetName(), "-agent")
	if !ok || device == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: device}}}
}

// AddressConflicts maps each of the device's addresses that other Devices
// claim too to those Devices' sorted names.
func AddressConflicts(claims *index.Claims, dev *itmv1.Device) (map[string][]string, error) {
	var out map[string][]string
	for _, addr := range device.Claims(dev) {
		others, err := OtherClaimants(claims, addr, dev.Name)
		if err != nil {
			return nil, err
		}
		if len(others) > 0 {
			if out == nil {
				out = map[string][]string{}
			}
			out[addr] = others
		}
	}
	return out, nil
}

// OtherClaimants are the sorted names of the Devices other than self that
// claim addr.
func OtherClaimants(claims *index.Claims, addr, self string) ([]string, error) {
	names, err := claims.Claimants(addr)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(names, func(n string) bool { return n == self }), nil
}
