package accounts

import (
	"context"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Kubernetes credentials.
const (
	// KubeconfigKey is the key of the kubeconfig in the credentials Secret.
	KubeconfigKey = "kubeconfig"
	// AnnotationTokenExpires records when the Secret's token expires.
	AnnotationTokenExpires = "itmanager.io/token-expires-at"
	// DefaultUsersNamespace is where Kubernetes accounts live by default.
	DefaultUsersNamespace = "itmanager-users"
	// DefaultTokenTTL is how long a token is valid by default.
	DefaultTokenTTL = 24 * time.Hour
	// LabelManagedNamespace marks a namespace in which itmanager may create
	// ServiceAccounts, tokens and Secrets: set (to ManagedNamespace) on the
	// namespaces itmanager creates, or by an admin on an existing one.
	// itmanager never labels an existing namespace itself (it may create
	// namespaces, never update them).
	LabelManagedNamespace = "itmanager.io/managed-namespace"
	ManagedNamespace      = "true"
)

// KubeconfigSecret is the name of a person's credentials Secret.
func KubeconfigSecret(user string) string { return user + "-kubeconfig" }

// Kubernetes provisions a ServiceAccount named after the person in one
// namespace, and, while the account is enabled, the Secret
// <user>-kubeconfig holding a token bound to that Secret: deleting the
// Secret revokes the token.
type Kubernetes struct {
	// Client writes; Reader reads uncached (the operator never caches or
	// lists ServiceAccounts or Secrets outside its own namespaces).
	Client client.Client
	Reader client.Reader
	Clock  clock.PassiveClock
	// Namespace holds the accounts; Forbidden are namespaces it must never
	// be (the operator's and the devices').
	Namespace string
	Forbidden []string
	// TTL of issued tokens; they are renewed when 80% of it has passed.
	TTL time.Duration
	// Server and CAData are what the kubeconfig points at.
	Server string
	CAData []byte

	// checked is set once Check passed in this session: Ensure and
	// SetEnabled create nothing before it has.
	checked bool
}

var _ Provider = (*Kubernetes)(nil)

// Check refuses a forbidden namespace, creates the namespace (labelled
// managed) when it is missing, and refuses an existing one that no admin
// labelled itmanager.io/managed-namespace=true: that namespace is someone
// else's, and what lives there (its Secrets, its AccessPolicies) is not
// itmanager's to mix people's credentials into.
func (k *Kubernetes) Check(ctx context.Context) error {
	ns := k.Namespace
	if strings.HasPrefix(ns, "kube-") || ns == "default" || ns == "" {
		return &ConfigError{Msg: fmt.Sprintf("spec.kubernetes.namespace %q is not allowed: kube-* and default are never used", ns)}
	}
	for _, f := range k.Forbidden {
		if ns == f {
			return &ConfigError{Msg: fmt.Sprintf("spec.kubernetes.namespace %q is not allowed: it is the operator's own", ns)}
		}
	}
	var got corev1.Namespace
	err := k.Reader.Get(ctx, client.ObjectKey{Name: ns}, &got)
	if apierrors.IsNotFound(err) {
		create := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue, LabelManagedNamespace: ManagedNamespace}}}
		if err := k.Client.Create(ctx, create); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Someone created it since the read: judged by its label
				// at the next check, never used before.
				return fmt.Errorf("namespace %s appeared while creating it; checking it again", ns)
			}
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
		k.checked = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	if got.DeletionTimestamp != nil {
		return fmt.Errorf("namespace %s is being deleted", ns)
	}
	if !Managed(&got) {
		return &ConfigError{Reason: itmv1.AccountProviderReasonNamespaceNotManaged, Msg: fmt.Sprintf(
			"spec.kubernetes.namespace %q exists and is not labelled %s=%s: itmanager creates accounts only in a namespace it created or one an admin labelled so; nothing is created there",
			ns, LabelManagedNamespace, ManagedNamespace)}
	}
	k.checked = true
	return nil
}

// Managed reports whether ns carries itmanager.io/managed-namespace=true.
func Managed(ns *corev1.Namespace) bool {
	return ns.Labels[LabelManagedNamespace] == ManagedNamespace
}

// ready runs Check once per session, before anything is created.
func (k *Kubernetes) ready(ctx context.Context) error {
	if k.checked {
		return nil
	}
	return k.Check(ctx)
}

func (k *Kubernetes) id(a Account) string { return k.Namespace + "/" + a.User }

// serviceAccount reads the person's ServiceAccount: nil when missing, a
// *ConflictError when it is not this request's.
func (k *Kubernetes) serviceAccount(ctx context.Context, a Account) (*corev1.ServiceAccount, error) {
	var sa corev1.ServiceAccount
	err := k.Reader.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: a.User}, &sa)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ServiceAccount %s: %w", k.id(a), err)
	}
	if reason := ownerReason(markOf(&sa.ObjectMeta), a.Owner); reason != "" {
		return nil, &ConflictError{ID: "ServiceAccount " + k.id(a), Reason: reason}
	}
	return &sa, nil
}

func markOf(m *metav1.ObjectMeta) string {
	if m.Labels[itmv1.LabelManagedBy] != itmv1.ManagedByValue {
		return ""
	}
	return m.Annotations[AnnotationOwnerUID]
}

// secret reads the credentials Secret: nil when missing, a *ConflictError
// when it is not this request's.
func (k *Kubernetes) secret(ctx context.Context, a Account) (*corev1.Secret, error) {
	var s corev1.Secret
	err := k.Reader.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: KubeconfigSecret(a.User)}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", k.Namespace, KubeconfigSecret(a.User), err)
	}
	if reason := ownerReason(markOf(&s.ObjectMeta), a.Owner); reason != "" {
		return nil, &ConflictError{ID: "Secret " + k.Namespace + "/" + KubeconfigSecret(a.User), Reason: reason}
	}
	return &s, nil
}

// Observe reports the ServiceAccount; it is active while its credentials
// Secret exists.
func (k *Kubernetes) Observe(ctx context.Context, a Account) (Observed, error) {
	sa, err := k.serviceAccount(ctx, a)
	if err != nil || sa == nil {
		return Observed{}, err
	}
	s, err := k.secret(ctx, a)
	if err != nil {
		return Observed{}, err
	}
	return Observed{Exists: true, ID: a.User, Enabled: s != nil}, nil
}

func (k *Kubernetes) meta(name string, a Account) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: name, Namespace: k.Namespace,
		Labels:      map[string]string{itmv1.LabelManagedBy: itmv1.ManagedByValue, LabelUser: a.User},
		Annotations: map[string]string{AnnotationOwnerUID: string(a.Owner)},
		// The request is cluster-scoped, so it can own namespaced objects:
		// should its finalizer ever be removed by force, garbage
		// collection still removes the account.
		OwnerReferences: []metav1.OwnerReference{{APIVersion: itmv1.GroupVersion.String(), Kind: "OnboardingRequest", Name: a.User, UID: a.Owner}},
	}
}

// Ensure creates the ServiceAccount (disabled: no credentials yet), only in
// a namespace Check accepts.
func (k *Kubernetes) Ensure(ctx context.Context, a Account) (Result, error) {
	if err := k.ready(ctx); err != nil {
		return Result{}, err
	}
	sa, err := k.serviceAccount(ctx, a)
	if err != nil {
		return Result{}, err
	}
	if sa == nil {
		create := &corev1.ServiceAccount{ObjectMeta: k.meta(a.User, a), AutomountServiceAccountToken: ptr.To(false)}
		if err := k.Client.Create(ctx, create); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Created since the read: by us (a retry), or by someone
				// else; the next pass tells which.
				return Result{}, fmt.Errorf("ServiceAccount %s appeared while creating it; retrying", k.id(a))
			}
			return Result{}, fmt.Errorf("create ServiceAccount %s: %w", k.id(a), err)
		}
	}
	return Result{ID: a.User}, nil
}

// SetEnabled issues (or renews, when 80% of its lifetime has passed) the
// token in the credentials Secret, or deletes the Secret, which revokes
// every token bound to it.
func (k *Kubernetes) SetEnabled(ctx context.Context, a Account, enabled bool) (Result, error) {
	if !enabled {
		return Result{ID: a.User}, k.deleteSecret(ctx, a)
	}
	if err := k.ready(ctx); err != nil {
		return Result{}, err
	}
	sa, err := k.serviceAccount(ctx, a)
	if err != nil {
		return Result{}, err
	}
	if sa == nil {
		return Result{}, fmt.Errorf("ServiceAccount %s does not exist", k.id(a))
	}
	s, err := k.secret(ctx, a)
	if err != nil {
		return Result{}, err
	}
	ref := &itmv1.ObjectReference{Namespace: k.Namespace, Name: KubeconfigSecret(a.User)}
	now := k.Clock.Now()
	if s != nil {
		if expires, ok := tokenExpiry(s); ok {
			renew := renewAt(expires, k.TTL)
			if now.Before(renew) {
				return Result{ID: a.User, Credentials: ref, RenewAt: renew}, nil
			}
		}
	} else {
		// The Secret exists before the token: the token is bound to it.
		s = &corev1.Secret{ObjectMeta: k.meta(KubeconfigSecret(a.User), a), Type: corev1.SecretTypeOpaque}
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID}}
		if err := k.Client.Create(ctx, s); err != nil {
			return Result{}, fmt.Errorf("create Secret %s/%s: %w", k.Namespace, s.Name, err)
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To(int64(k.TTL / time.Second)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: s.Name, UID: s.UID},
	}}
	if err := k.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return Result{}, fmt.Errorf("request a token for ServiceAccount %s: %w", k.id(a), err)
	}
	kubeconfig, err := k.kubeconfig(a.User, tr.Status.Token)
	if err != nil {
		return Result{}, err
	}
	expires := tr.Status.ExpirationTimestamp.Time
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationTokenExpires] = expires.UTC().Format(time.RFC3339)
	s.Data = map[string][]byte{KubeconfigKey: kubeconfig}
	// Update carries the resourceVersion read (or created): a Secret
	// replaced in between is not overwritten.
	if err := k.Client.Update(ctx, s); err != nil {
		return Result{}, fmt.Errorf("write Secret %s/%s: %w", k.Namespace, s.Name, err)
	}
	return Result{ID: a.User, Credentials: ref, RenewAt: renewAt(expires, k.TTL)}, nil
}

// renewAt is when a token expiring at expires, issued for ttl, is renewed:
// once 80% of its life has passed.
func renewAt(expires time.Time, ttl time.Duration) time.Time {
	return expires.Add(-ttl / 5)
}

func tokenExpiry(s *corev1.Secret) (time.Time, bool) {
	if len(s.Data[KubeconfigKey]) == 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s.Annotations[AnnotationTokenExpires])
	return t, err == nil
}

func (k *Kubernetes) kubeconfig(user, token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["itmanager"] = &clientcmdapi.Cluster{Server: k.Server, CertificateAuthorityData: k.CAData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "itmanager", AuthInfo: user, Namespace: k.Namespace}
	cfg.CurrentContext = user
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return out, nil
}

func (k *Kubernetes) deleteSecret(ctx context.Context, a Account) error {
	s, err := k.secret(ctx, a)
	if err != nil || s == nil {
		return err
	}
	err = k.Client.Delete(ctx, s, client.Preconditions{UID: &s.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Secret %s/%s: %w", k.Namespace, s.Name, err)
	}
	return nil
}

// SyncGroups does nothing: Kubernetes groups are granted by AccessPolicies,
// which bind the person's ServiceAccount while they are in a group.
func (k *Kubernetes) SyncGroups(context.Context, Account) error { return nil }

// Delete removes the credentials Secret and the ServiceAccount; deleting
// the ServiceAccount also invalidates any token ever issued for it.
func (k *Kubernetes) Delete(ctx context.Context, a Account) error {
	if err := k.deleteSecret(ctx, a); err != nil {
		return err
	}
	sa, err := k.serviceAccount(ctx, a)
	if err != nil || sa == nil {
		return err
	}
	err = k.Client.Delete(ctx, sa, client.Preconditions{UID: &sa.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete ServiceAccount %s: %w", k.id(a), err)
	}
	return nil
}

// OffboardDeletes is true: a leaver's ServiceAccount is deleted, so no
// token for it, however obtained, works again.
func (k *Kubernetes) OffboardDeletes() bool { return true }

// Close does nothing.
func (k *Kubernetes) Close() error { return nil }
