//go:build integration

package testenv

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
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

	t.Run("an API server restart keeps the address, certificates, bound tokens, data and controller manager", func(t *testing.T) {
		cs, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "itm-restart"}}
		if err := c.Create(ctx, sa); err != nil {
			t.Fatal(err)
		}
		tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		host := env.Config.Host
		if err := env.StopAPIServer(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(host, "https://"), time.Second); err == nil {
			_ = conn.Close()
			t.Fatalf("%s still accepts connections after StopAPIServer", host)
		}
		if err := env.StartAPIServer(time.Minute); err != nil {
			t.Fatal(err)
		}
		if env.Config.Host != host {
			t.Fatalf("the API server came back at %s, was %s", env.Config.Host, host)
		}
		// The admin client certificate from before the restart still works,
		// and etcd kept the data.
		if err := c.Get(ctx, client.ObjectKeyFromObject(sa), &corev1.ServiceAccount{}); err != nil {
			t.Fatal(err)
		}
		tokenCfg := &rest.Config{Host: host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
		tokenClient, err := kubernetes.NewForConfig(tokenCfg)
		if err != nil {
			t.Fatal(err)
		}
		review, err := tokenClient.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("a bound token issued before the restart: %v", err)
		}
		if got := review.Status.UserInfo.Username; got != "system:serviceaccount:default:itm-restart" {
			t.Fatalf("the token authenticates as %q", got)
		}

		// kube-controller-manager still collects garbage.
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "owner-after-restart"}}
		if err := c.Create(ctx, owner); err != nil {
			t.Fatal(err)
		}
		dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "dependent-after-restart",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}},
		}}
		if err := c.Create(ctx, dependent); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, owner); err != nil {
			t.Fatal(err)
		}
		eventually("garbage collection after the restart", func() bool {
			return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{}))
		})
	})
}
