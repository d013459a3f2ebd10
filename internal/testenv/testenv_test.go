package testenv

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestControllerManager proves the behaviours later integration tests rely
// on: without kube-controller-manager none of them happen under envtest.
func TestControllerManager(t *testing.T) {
	env, err := Start(Options{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	c, err := client.New(env.Config, client.Options{Scheme: Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within 30s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "itm-testenv"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}

	t.Run("serviceaccount controller creates default", func(t *testing.T) {
		eventually("default ServiceAccount", func() bool {
			return c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{}) == nil
		})
	})

	t.Run("clusterrole-aggregation fills view and edit", func(t *testing.T) {
		for _, name := range []string{"view", "edit"} {
			eventually(name+" aggregation", func() bool {
				role := &rbacv1.ClusterRole{}
				return c.Get(ctx, client.ObjectKey{Name: name}, role) == nil && len(role.Rules) > 0
			})
		}
	})

	t.Run("garbagecollector deletes dependents", func(t *testing.T) {
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "owner"}}
		if err := c.Create(ctx, owner); err != nil {
			t.Fatal(err)
		}
		dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns.Name, Name: "dependent",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID, BlockOwnerDeletion: ptr.To(true),
			}},
		}}
		if err := c.Create(ctx, dependent); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, owner); err != nil {
			t.Fatal(err)
		}
		eventually("garbage collection of the dependent", func() bool {
			return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{}))
		})
	})

	t.Run("namespace controller finishes namespace deletion", func(t *testing.T) {
		if err := c.Delete(ctx, ns); err != nil {
			t.Fatal(err)
		}
		eventually("namespace deletion", func() bool {
			return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{}))
		})
	})
}
