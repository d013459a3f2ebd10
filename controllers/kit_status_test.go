package controllers_test

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/kit"
)

// kit.Status against the real API server, on Devices (a kind whose status
// has several writers). Each spec waits until the Device controller has
// written its status and then leaves the Device alone: nothing it writes
// here is an input of that controller.
var _ = Describe("kit.Status", func() {
	// countingClient counts the status writes that reach the API server.
	countingClient := func() (client.Client, *atomic.Int32) {
		var n atomic.Int32
		c, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		return interceptor.NewClient(c, interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				n.Add(1)
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
			SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
				n.Add(1)
				return c.SubResource(sub).Apply(ctx, obj, opts...)
			},
		}), &n
	}
	// settled is a Device the Device controller has reconciled.
	settled := func() *itmv1.Device {
		GinkgoHelper()
		d := agentDevice(func(d *itmv1.Device) { d.Spec.Agent = nil })
		Eventually(conditionOf(d.Name, itmv1.ConditionReady)).ShouldNot(BeEmpty())
		got := getDevice(d.Name)
		Consistently(func() string { return getDevice(d.Name).ResourceVersion }).
			WithTimeout(500*time.Millisecond).Should(Equal(got.ResourceVersion), "the Device controller is done with it")
		return got
	}
	// approve sets an Approved-like condition on the Device's status by
	// server-side apply, as a person with their own field manager would.
	approve := func(d *itmv1.Device, condType string) {
		GinkgoHelper()
		u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": []any{map[string]any{
			"type": condType, "status": "True", "reason": "ByHand", "message": "set by a person", "lastTransitionTime": metav1.Now().UTC().Format("2006-01-02T15:04:05Z"),
		}}}}}
		u.SetGroupVersionKind(itmv1.GroupVersion.WithKind("Device"))
		u.SetName(d.Name)
		Expect(k8s.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("approver"))).To(Succeed())
	}
	setOwn := func(d *itmv1.Device, msg string) {
		kit.SetBool(&d.Status.Conditions, d.Generation, metav1.Now().Time, "KitProbe", true, "Probe", msg)
	}

	It("server-side apply of a whole status keeps a condition another manager set after the read", func() {
		base := settled()
		approve(base, "Approved")
		w := &kit.Status{Client: k8s, FieldManager: "kit-probe"}
		obj := base.DeepCopy()
		setOwn(obj, "ours")
		Expect(w.Write(ctx, base, obj)).To(BeTrue())

		got := getDevice(base.Name)
		Expect(meta.FindStatusCondition(got.Status.Conditions, "KitProbe")).NotTo(BeNil(), "our condition was written")
		Expect(meta.FindStatusCondition(got.Status.Conditions, "Approved")).To(HaveField("Reason", "ByHand"),
			"the approver's condition, absent from our copy, is still there")
	})

	It("AtReadVersion fails with a Conflict when the object changed since the read, and writes nothing", func() {
		base := settled()
		approve(base, "Approved") // the object moves on after our read
		w := &kit.Status{Client: k8s, FieldManager: "kit-probe"}
		obj := base.DeepCopy()
		setOwn(obj, "computed from a stale read")
		_, err := w.Write(ctx, base, obj, kit.AtReadVersion())
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
		Expect(meta.FindStatusCondition(getDevice(base.Name).Status.Conditions, "KitProbe")).To(BeNil())

		By("from a fresh read the same write goes through")
		fresh := getDevice(base.Name)
		obj = fresh.DeepCopy()
		setOwn(obj, "computed from a fresh read")
		Expect(w.Write(ctx, fresh, obj, kit.AtReadVersion())).To(BeTrue())
		Expect(meta.FindStatusCondition(getDevice(base.Name).Status.Conditions, "KitProbe")).NotTo(BeNil())
	})

	It("Shared never overwrites a field another writer set after the read: the optimistic lock answers Conflict", func() {
		base := settled()
		theirs := base.DeepCopy()
		theirs.Status.Observed = &itmv1.ObservedFacts{Hostname: "theirs"}
		Expect(k8s.Status().Patch(ctx, theirs, client.MergeFrom(base))).To(Succeed())

		w := &kit.Status{Client: k8s, FieldManager: "kit-probe", Shared: true}
		obj := base.DeepCopy()
		obj.Status.Observed = &itmv1.ObservedFacts{Hostname: "ours"}
		_, err := w.Write(ctx, base, obj)
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
		Expect(getDevice(base.Name).Status.Observed).To(HaveField("Hostname", "theirs"))
	})

	for _, shared := range []bool{false, true} {
		It("sends no request for a status equal to the one read, nor for its own last write the read does not show yet", func() {
			By(map[bool]string{false: "server-side apply", true: "shared (merge patch)"}[shared])
			c, requests := countingClient()
			w := &kit.Status{Client: c, FieldManager: "kit-probe", Shared: shared}
			base := settled()

			Expect(w.Write(ctx, base, base.DeepCopy())).To(BeFalse())
			Expect(requests.Load()).To(BeZero(), "an unchanged status")

			obj := base.DeepCopy()
			setOwn(obj, "once")
			again := obj.DeepCopy()
			Expect(w.Write(ctx, base, obj)).To(BeTrue())
			Expect(requests.Load()).To(Equal(int32(1)))

			By("the same content over the same (stale) read: our own write not seen yet, not drift")
			Expect(w.Write(ctx, base, again)).To(BeFalse())
			Expect(requests.Load()).To(Equal(int32(1)))

			By("other content over that read is written")
			other := base.DeepCopy()
			setOwn(other, "twice")
			_, err := w.Write(ctx, base, other)
			if shared {
				// Our own first write moved the resourceVersion on.
				Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
			} else {
				Expect(err).NotTo(HaveOccurred())
			}
			Expect(requests.Load()).To(Equal(int32(2)))
		})
	}
})
