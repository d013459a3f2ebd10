package controllers_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// gitopsManager is the field manager of the GitOps tool the spec plays.
const gitopsManager = "gitops-tool"

// samples are the objects of config/samples, as a GitOps tool reads them.
func samples() []*unstructured.Unstructured {
	GinkgoHelper()
	paths, err := filepath.Glob(filepath.Join("..", "config", "samples", "itmanager_*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(paths).NotTo(BeEmpty())
	var out []*unstructured.Unstructured
	for _, p := range paths {
		b, err := os.ReadFile(p)
		Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(b, &u.Object)).To(Succeed(), p)
		out = append(out, u)
	}
	return out
}

// specOwners lists, for each field manager other than the GitOps tool's,
// the top-level spec fields it owns on u ("assignee", "class", ...).
func specOwners(u *unstructured.Unstructured) map[string][]string {
	GinkgoHelper()
	out := map[string][]string{}
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == gitopsManager || mf.Subresource != "" || mf.FieldsV1 == nil {
			continue
		}
		var fields map[string]map[string]any
		Expect(json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields)).To(Succeed())
		for f := range fields["f:spec"] {
			if f != "." {
				out[mf.Manager] = append(out[mf.Manager], strings.TrimPrefix(f, "f:"))
			}
		}
	}
	return out
}

// withoutStatus is u without what status writes change: the status, the
// resourceVersion and the managedFields entries of the status subresource.
func withoutStatus(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy()
	delete(c.Object, "status")
	c.SetResourceVersion("")
	var mfs []metav1.ManagedFieldsEntry
	for _, mf := range c.GetManagedFields() {
		if mf.Subresource == "" {
			mfs = append(mfs, mf)
		}
	}
	c.SetManagedFields(mfs)
	return c.Object
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var _ = Describe("GitOps apply", func() {
	It("applies every sample twice by server-side apply (own field manager, no force) after the operator reconciled: no conflict, and the second apply changes nothing", func() {
		objs := samples()
		DeferCleanup(func() {
			for _, u := range objs {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, u.DeepCopy()))).To(Succeed())
			}
			for _, u := range objs {
				Eventually(func() bool {
					return apierrors.IsNotFound(k8s.Get(ctx, types.NamespacedName{Name: u.GetName()}, u.DeepCopy()))
				}).WithTimeout(30*time.Second).Should(BeTrue(), "%s %s is deleted", u.GetKind(), u.GetName())
			}
		})
		apply := func(u *unstructured.Unstructured) error {
			return k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(gitopsManager))
		}
		for _, u := range objs {
			Expect(apply(u)).To(Succeed(), "first apply of %s %s", u.GetKind(), u.GetName())
		}

		By("the operator reconciles each sample: Ready set at the current generation")
		live := map[string]*unstructured.Unstructured{}
		for _, u := range objs {
			Eventually(func(g Gomega) {
				got := liveObject(u.GetKind(), u.GetName())
				observed, _, _ := unstructured.NestedInt64(got.Object, "status", "observedGeneration")
				g.Expect(observed).To(Equal(got.GetGeneration()))
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				g.Expect(slices.ContainsFunc(conds, func(c any) bool { return c.(map[string]any)["type"] == "Ready" })).To(BeTrue())
				live[u.GetKind()+"/"+u.GetName()] = got
			}).WithTimeout(20*time.Second).Should(Succeed(), "%s %s is reconciled", u.GetKind(), u.GetName())
		}
		// Let the operator finish what the first reconcile started (a
		// finalizer, a second status write), then read the versions.
		for key, got := range live {
			since := time.Now()
			Eventually(func() time.Duration {
				before := got.GetResourceVersion()
				got = liveObject(got.GetKind(), got.GetName())
				live[key] = got
				if before != got.GetResourceVersion() {
					since = time.Now()
				}
				return time.Since(since)
			}).WithTimeout(30*time.Second).WithPolling(250*time.Millisecond).Should(BeNumerically(">=", 2*time.Second), "%s settles", key)
		}

		By("the second apply: no conflict, no change")
		for _, u := range objs {
			key := u.GetKind() + "/" + u.GetName()
			Expect(apply(u)).To(Succeed(), "second apply of %s: a conflict means the operator took a spec field the GitOps tool owns", key)
			after := liveObject(u.GetKind(), u.GetName())
			// Only the operator's own status writes (a Device checking in, a
			// policy recounting) may move the resourceVersion meanwhile; the
			// apply changes neither spec nor metadata nor its own
			// managedFields entry (whose time moves on any change it makes).
			if after.GetResourceVersion() != live[key].GetResourceVersion() {
				AddReportEntry("status moved during the second apply", key)
			}
			was, is := withoutStatus(live[key]), withoutStatus(after)
			Expect(is).To(Equal(was), "the second apply of %s changed it:\nbefore %s\nafter  %s", key, asJSON(was["metadata"]), asJSON(is["metadata"]))
			Expect(specOwners(after)).To(BeEmpty(), "%s: nobody but the GitOps tool owns spec (DESIGN §2's exceptions do not apply to a sample)", key)
		}

		By("negative control: a spec field another manager took is a conflict the apply reports, and specOwners names it")
		var policy *unstructured.Unstructured
		for _, u := range objs {
			if u.GetKind() == "AccessPolicy" {
				policy = u
			}
		}
		Expect(policy).NotTo(BeNil(), "config/samples has an AccessPolicy")
		intruder := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"mode": "Audit"}}}
		intruder.SetGroupVersionKind(policy.GroupVersionKind())
		intruder.SetName(policy.GetName())
		Expect(k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(intruder), client.FieldOwner("intruder"), client.ForceOwnership)).To(Succeed())
		err := apply(policy)
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "an apply without force over a field another manager owns: %v", err)
		Expect(specOwners(liveObject("AccessPolicy", policy.GetName()))).To(Equal(map[string][]string{"intruder": {"mode"}}))
	})
})
