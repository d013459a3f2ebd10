package accounts_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// The Kubernetes provider against the real API server (bound tokens, their
// revocation) is covered by the controller tests; these check its rules.

var now = time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)

func kube(objs ...client.Object) (*accounts.Kubernetes, client.Client) {
	c := fake.NewClientBuilder().WithScheme(testenv.Scheme).WithObjects(objs...).Build()
	return &accounts.Kubernetes{Client: c, Reader: c, Clock: clocktesting.NewFakePassiveClock(now), Namespace: "itmanager-users",
		Forbidden: []string{"itmanager-system", "itmanager-devices"}, TTL: time.Hour, Server: "https://api.example.com", CAData: []byte("ca")}, c
}

func TestKubernetesCheck(t *testing.T) {
	ctx := context.Background()
	for ns, want := range map[string]string{
		"kube-system":       "kube-* and default are never used",
		"default":           "kube-* and default are never used",
		"itmanager-system":  "the operator's own",
		"itmanager-devices": "the operator's own",
	} {
		k, _ := kube()
		k.Namespace = ns
		err := k.Check(ctx)
		if !accounts.IsConfig(err) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "spec.kubernetes.namespace") {
			t.Errorf("Check(%s) = %v, want a ConfigError naming the field and %q", ns, err, want)
		}
	}
	k, c := kube()
	if err := k.Check(ctx); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, types.NamespacedName{Name: "itmanager-users"}, ns); err != nil || ns.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue ||
		ns.Labels[accounts.LabelManagedNamespace] != "true" {
		t.Fatalf("namespace not created with the marks (managed-by, managed-namespace=true): %v %v", ns.Labels, err)
	}
}

// TestKubernetesUsesOnlyManagedNamespaces: an existing namespace is used only
// when it carries itmanager.io/managed-namespace=true; otherwise Check says
// so with its own reason, and Ensure and SetEnabled create nothing there.
func TestKubernetesUsesOnlyManagedNamespaces(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		labels map[string]string
		ok     bool
	}{
		"no labels":                      {nil, false},
		"only managed-by itmanager":      {map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue}, false},
		"managed-namespace=false":        {map[string]string{accounts.LabelManagedNamespace: "false"}, false},
		"managed-namespace=true (admin)": {map[string]string{accounts.LabelManagedNamespace: "true"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			k, c := kube(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "itmanager-users", Labels: tc.labels}})
			a := accounts.Account{User: "ada", Owner: "uid-a"}
			err := k.Check(ctx)
			_, ensureErr := k.Ensure(ctx, a)
			_, activeErr := k.SetEnabled(ctx, a, true)
			saErr := c.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: "ada"}, &corev1.ServiceAccount{})
			secretErr := c.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: "ada-kubeconfig"}, &corev1.Secret{})
			if tc.ok {
				if err != nil || ensureErr != nil || saErr != nil {
					t.Fatalf("Check %v, Ensure %v, ServiceAccount %v: want all to succeed", err, ensureErr, saErr)
				}
				return
			}
			if !accounts.IsConfig(err) || accounts.ConfigReason(err) != "NamespaceNotManaged" ||
				!strings.Contains(err.Error(), "spec.kubernetes.namespace") || !strings.Contains(err.Error(), "itmanager.io/managed-namespace=true") {
				t.Errorf("Check = %v (reason %q), want a ConfigError with reason NamespaceNotManaged naming the field and the label", err, accounts.ConfigReason(err))
			}
			if !accounts.IsConfig(ensureErr) || !accounts.IsConfig(activeErr) {
				t.Errorf("Ensure %v, SetEnabled %v: want both refused with the same ConfigError", ensureErr, activeErr)
			}
			if !apierrors.IsNotFound(saErr) || !apierrors.IsNotFound(secretErr) {
				t.Errorf("something was created in an unmanaged namespace: ServiceAccount %v, Secret %v", saErr, secretErr)
			}
		})
	}
}

func TestKubernetesNeverAdopts(t *testing.T) {
	ctx := context.Background()
	foreign := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-users", Name: "ada"}}
	marked := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-users", Name: "bob",
		Labels:      map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue},
		Annotations: map[string]string{accounts.AnnotationOwnerUID: "old-uid"}}}
	k, c := kube(foreign, marked)
	for _, a := range []accounts.Account{{User: "ada", Owner: "uid-a"}, {User: "bob", Owner: "new-uid"}} {
		if _, err := k.Observe(ctx, a); !accounts.IsConflict(err) {
			t.Errorf("Observe %s: %v, want a conflict", a.User, err)
		}
		if _, err := k.Ensure(ctx, a); !accounts.IsConflict(err) {
			t.Errorf("Ensure %s: %v, want a conflict", a.User, err)
		}
		if _, err := k.SetEnabled(ctx, a, true); !accounts.IsConflict(err) {
			t.Errorf("SetEnabled %s: %v, want a conflict", a.User, err)
		}
		if err := k.Delete(ctx, a); !accounts.IsConflict(err) {
			t.Errorf("Delete %s: %v, want a conflict", a.User, err)
		}
	}
	for _, name := range []string{"ada", "bob"} {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: name}, &corev1.ServiceAccount{}); err != nil {
			t.Errorf("%s was touched: %v", name, err)
		}
	}
	// A credentials Secret someone else made is not overwritten either.
	k, _ = kube(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "itmanager-users", Name: "cy-kubeconfig"}})
	cy := accounts.Account{User: "cy", Owner: "uid-c"}
	if _, err := k.Ensure(ctx, cy); err != nil {
		t.Fatal(err)
	}
	if _, err := k.SetEnabled(ctx, cy, true); !accounts.IsConflict(err) {
		t.Fatalf("SetEnabled over a foreign Secret: %v, want a conflict", err)
	}
}

func TestKubernetesLifecycle(t *testing.T) {
	ctx := context.Background()
	k, c := kube()
	a := accounts.Account{User: "ada", Owner: "uid-a"}
	if o, err := k.Observe(ctx, a); err != nil || o.Exists {
		t.Fatalf("before: %+v %v", o, err)
	}
	if _, err := k.Ensure(ctx, a); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: "ada"}, sa); err != nil {
		t.Fatal(err)
	}
	if sa.Annotations[accounts.AnnotationOwnerUID] != "uid-a" || len(sa.OwnerReferences) != 1 || sa.OwnerReferences[0].UID != "uid-a" ||
		sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Fatalf("ServiceAccount %+v", sa.ObjectMeta)
	}
	if o, _ := k.Observe(ctx, a); !o.Exists || o.Enabled {
		t.Fatalf("created: %+v, want existing and disabled", o)
	}
	res, err := k.SetEnabled(ctx, a, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Credentials == nil || res.Credentials.Name != "ada-kubeconfig" || res.Credentials.Namespace != "itmanager-users" {
		t.Fatalf("credentials %+v", res.Credentials)
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "itmanager-users", Name: "ada-kubeconfig"}, s); err != nil {
		t.Fatal(err)
	}
	kc := string(s.Data[accounts.KubeconfigKey])
	for _, want := range []string{"server: https://api.example.com", "token: fake-token", "namespace: itmanager-users", "certificate-authority-data:"} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, kc)
		}
	}
	if s.OwnerReferences[0].Kind != "ServiceAccount" {
		t.Errorf("Secret owner %+v, want the ServiceAccount", s.OwnerReferences)
	}

	// Renewal: not before 80% of the token's life, then a new token.
	expires := now.Add(time.Hour)
	s.Annotations[accounts.AnnotationTokenExpires] = expires.Format(time.RFC3339)
	if err := c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	k.Clock = clocktesting.NewFakePassiveClock(expires.Add(-13 * time.Minute))
	if res, err = k.SetEnabled(ctx, a, true); err != nil || !res.RenewAt.Equal(expires.Add(-12*time.Minute)) {
		t.Fatalf("before renewal: %+v %v, want renewal at 80%%", res, err)
	}
	_ = c.Get(ctx, client.ObjectKeyFromObject(s), s)
	if s.Annotations[accounts.AnnotationTokenExpires] != expires.Format(time.RFC3339) {
		t.Fatal("renewed too early")
	}
	k.Clock = clocktesting.NewFakePassiveClock(expires.Add(-12 * time.Minute))
	if _, err = k.SetEnabled(ctx, a, true); err != nil {
		t.Fatal(err)
	}
	_ = c.Get(ctx, client.ObjectKeyFromObject(s), s)
	if s.Annotations[accounts.AnnotationTokenExpires] == expires.Format(time.RFC3339) {
		t.Fatal("not renewed at 80% of its life")
	}

	// Disabling deletes the Secret; deleting removes the ServiceAccount.
	if _, err := k.SetEnabled(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(s), s); !apierrors.IsNotFound(err) {
		t.Fatalf("Secret after disabling: %v", err)
	}
	if err := k.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, a); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if o, _ := k.Observe(ctx, a); o.Exists {
		t.Fatal("ServiceAccount survived Delete")
	}
	if !k.OffboardDeletes() {
		t.Fatal("a leaver's ServiceAccount must be deleted")
	}
}
