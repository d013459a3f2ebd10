package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
)

// ProviderOpener opens a session with an AccountProvider.
type ProviderOpener interface {
	Open(ctx context.Context, p *itmv1.AccountProvider) (accounts.Provider, error)
}

// Providers opens AccountProviders: it reads their Secrets (only in the
// operator namespace) and hands each provider what it needs.
type Providers struct {
	// Client writes ServiceAccounts, Secrets and Namespaces; Reader reads
	// them, and the referenced Secrets, uncached.
	Client client.Client
	Reader client.Reader
	Clock  clock.PassiveClock
	// OperatorNamespace holds the referenced Secrets; it and
	// DevicesNamespace are never a Kubernetes provider's namespace.
	OperatorNamespace, DevicesNamespace string
	// APIServer and APIServerCA go into issued kubeconfigs.
	APIServer   string
	APIServerCA []byte
}

// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;create;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts/token,verbs=create
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create

// Open opens p. Errors that only a change to p or its Secrets can fix are
// *accounts.ConfigError.
func (f *Providers) Open(ctx context.Context, p *itmv1.AccountProvider) (accounts.Provider, error) {
	switch {
	case p.Spec.Type == itmv1.AccountProviderKubernetes && p.Spec.Kubernetes != nil:
		k := p.Spec.Kubernetes
		ns, ttl := kubernetesNamespace(p), accounts.DefaultTokenTTL
		if err := f.namespaceTaken(ctx, p, ns); err != nil {
			return nil, err
		}
		if k.TokenTTL != nil && k.TokenTTL.Duration >= 10*time.Minute {
			ttl = k.TokenTTL.Duration
		}
		return &accounts.Kubernetes{Client: f.Client, Reader: f.Reader, Clock: f.Clock, Namespace: ns,
			Forbidden: []string{f.OperatorNamespace, f.DevicesNamespace}, TTL: ttl, Server: f.APIServer, CAData: f.APIServerCA}, nil
	case p.Spec.Type == itmv1.AccountProviderLDAP && p.Spec.LDAP != nil:
		l := p.Spec.LDAP
		password, err := f.secretKey(ctx, "spec.ldap.bindPasswordSecretRef", l.BindPasswordSecretRef)
		if err != nil {
			return nil, err
		}
		cfg := accounts.LDAPConfig{URL: l.URL, BindDN: l.BindDN, BindPassword: string(password), UsersDN: l.UsersDN,
			GroupsDN: l.GroupsDN, ObjectClasses: l.UserObjectClasses, Insecure: l.Insecure, Delete: l.OffboardAction == itmv1.LDAPOffboardDelete}
		if l.CASecretRef != nil {
			if cfg.CAPEM, err = f.secretKey(ctx, "spec.ldap.caSecretRef", *l.CASecretRef); err != nil {
				return nil, err
			}
		}
		return accounts.DialLDAP(ctx, cfg)
	}
	return nil, &accounts.ConfigError{Msg: fmt.Sprintf("spec.type %s needs spec.%s", p.Spec.Type, map[itmv1.AccountProviderType]string{
		itmv1.AccountProviderKubernetes: "kubernetes", itmv1.AccountProviderLDAP: "ldap"}[p.Spec.Type])}
}

// secretKey reads one key of a Secret in the operator namespace; the value
// never appears in an error.
func (f *Providers) secretKey(ctx context.Context, field string, ref itmv1.SecretKeyReference) ([]byte, error) {
	var s corev1.Secret
	err := f.Reader.Get(ctx, client.ObjectKey{Namespace: f.OperatorNamespace, Name: ref.Name}, &s)
	if apierrors.IsNotFound(err) {
		return nil, &accounts.ConfigError{Msg: fmt.Sprintf("%s: Secret %s/%s does not exist", field, f.OperatorNamespace, ref.Name),
			Reason: itmv1.AccountProviderReasonSecretNotFound}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read Secret %s/%s: %w", field, f.OperatorNamespace, ref.Name, err)
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return nil, &accounts.ConfigError{Msg: fmt.Sprintf("%s: Secret %s/%s has no key %q", field, f.OperatorNamespace, ref.Name, ref.Key)}
	}
	return v, nil
}

func kubernetesNamespace(p *itmv1.AccountProvider) string {
	if p.Spec.Kubernetes == nil || p.Spec.Kubernetes.Namespace == "" {
		return accounts.DefaultUsersNamespace
	}
	return p.Spec.Kubernetes.Namespace
}

// namespaceTaken refuses a Kubernetes provider whose namespace an older one
// already uses: both would manage the same ServiceAccounts, and offboarding
// from one would delete what the other provides.
func (f *Providers) namespaceTaken(ctx context.Context, p *itmv1.AccountProvider, ns string) error {
	var list itmv1.AccountProviderList
	if err := f.Client.List(ctx, &list); err != nil {
		return err
	}
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == p.UID || o.Spec.Type != itmv1.AccountProviderKubernetes || kubernetesNamespace(o) != ns {
			continue
		}
		older := o.CreationTimestamp.Before(&p.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&p.CreationTimestamp) && o.Name < p.Name)
		if older {
			return &accounts.ConfigError{Msg: fmt.Sprintf("spec.kubernetes.namespace %q is already used by AccountProvider %s; each Kubernetes provider needs its own namespace", ns, o.Name)}
		}
	}
	return nil
}
