package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/access"
	"github.com/itmanager-io/itmanager/internal/index"
)

// policySnapshot is everything one reconcile of a policy reads, gathered
// before any decision: what resolution reads and what the policy generated
// so far.
type policySnapshot struct {
	access.Snapshot
	have generatedObjects
}

// gather reads, through the cache, what the policy's resolution needs:
// the requests of its people, their devices and the selected ones with
// their check-ins and address conflicts, the providers, the namespaces it
// names or selects (all of them when a grant spreads over namespaces), and
// live the ServiceAccounts its people's requests claim; then the objects it
// generated.
func (r *AccessPolicyReconciler) gather(ctx context.Context, p *itmv1.AccessPolicy, sels access.Selectors) (*policySnapshot, error) {
	s := &policySnapshot{Snapshot: access.Snapshot{Policy: p, Selectors: sels}}
	var err error
	if s.Requests, err = r.requests(ctx, p.Spec.Subjects); err != nil {
		return nil, err
	}
	// Which devices to read follows from who the people are.
	people := access.People(p.Spec.Subjects, s.Requests)
	if s.Candidates, err = r.candidates(ctx, people, sels.Devices); err != nil {
		return nil, err
	}
	if s.Providers, err = r.providers(ctx); err != nil {
		return nil, err
	}
	if s.Namespaces, err = r.namespaces(ctx, &p.Spec, sels); err != nil {
		return nil, err
	}
	if len(p.Spec.KubernetesAccess) > 0 {
		if s.ServiceAccounts, err = r.serviceAccounts(ctx, access.AccountRefs(people, s.Requests, s.Providers)); err != nil {
			return nil, err
		}
	}
	if s.have, err = r.generated(ctx, p.Name); err != nil {
		return nil, err
	}
	s.NetworkPolicies = s.have.nps
	return s, nil
}

// generated lists the objects carrying the policy's label, of every kind.
func (r *AccessPolicyReconciler) generated(ctx context.Context, policy string) (generatedObjects, error) {
	var g generatedObjects
	var err error
	if g.nps, err = r.nps.List(ctx, policy); err != nil {
		return g, err
	}
	if g.crbs, err = r.crbs.List(ctx, policy); err != nil {
		return g, err
	}
	g.rbs, err = r.rbs.List(ctx, policy)
	return g, err
}

// requests are the OnboardingRequests of the listed users and of every
// member of the listed groups, by name.
func (r *AccessPolicyReconciler) requests(ctx context.Context, s itmv1.Subjects) (map[string]*itmv1.OnboardingRequest, error) {
	out := map[string]*itmv1.OnboardingRequest{}
	for _, u := range s.Users {
		req := &itmv1.OnboardingRequest{}
		switch err := r.Get(ctx, types.NamespacedName{Name: u}, req); {
		case err == nil:
			out[u] = req
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	for _, g := range s.Groups {
		list := &itmv1.OnboardingRequestList{}
		if err := r.List(ctx, list, client.MatchingFields{index.OnboardingGroupField: g}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			out[list.Items[i].Name] = &list.Items[i]
		}
	}
	return out, nil
}

// candidates are the devices assigned to the people and those the selector
// matches, with their live check-ins and address conflicts.
func (r *AccessPolicyReconciler) candidates(ctx context.Context, people map[string]bool, sel labels.Selector) ([]access.Candidate, error) {
	var devs []itmv1.Device
	for person := range people {
		list := &itmv1.DeviceList{}
		if err := r.List(ctx, list, client.MatchingFields{index.DeviceAssigneeField: person}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		devs = append(devs, list.Items...)
	}
	if sel != nil {
		list := &itmv1.DeviceList{}
		if err := r.List(ctx, list, client.MatchingLabelsSelector{Selector: sel}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		devs = append(devs, list.Items...)
	}
	out := make([]access.Candidate, 0, len(devs))
	for i := range devs {
		d := &devs[i]
		c := access.Candidate{Device: d, AddressRanges: r.AddressRanges}
		var err error
		if c.LastCheckIn, err = RenewTime(ctx, r.Client, r.DevicesNamespace, d); err != nil {
			return nil, err
		}
		if c.Conflicts, err = AddressConflicts(r.claims, d); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (r *AccessPolicyReconciler) providers(ctx context.Context) (map[string]*itmv1.AccountProvider, error) {
	list := &itmv1.AccountProviderList{}
	if err := r.List(ctx, list); err != nil {
		return nil, err
	}
	out := make(map[string]*itmv1.AccountProvider, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

// namespaces reads every namespace the spec names (in destinations and
// kubernetesAccess), those each namespaceSelector matches, and all of
// them when a grant spreads over namespaces.
func (r *AccessPolicyReconciler) namespaces(ctx context.Context, spec *itmv1.AccessPolicySpec, sels access.Selectors) (map[string]*corev1.Namespace, error) {
	out := map[string]*corev1.Namespace{}
	list := func(opts ...client.ListOption) error {
		l := &corev1.NamespaceList{}
		if err := r.List(ctx, l, opts...); err != nil {
			return err
		}
		for i := range l.Items {
			out[l.Items[i].Name] = &l.Items[i]
		}
		return nil
	}
	if access.SpreadsOverNamespaces(spec, r.clusterWideRoles()) {
		if err := list(); err != nil {
			return nil, err
		}
		return out, nil
	}
	var named []string
	for i, d := range spec.Destinations {
		if sel := sels.Namespaces[i]; sel != nil {
			if err := list(client.MatchingLabelsSelector{Selector: sel}); err != nil {
				return nil, err
			}
		}
		named = append(named, d.Namespaces...)
	}
	for _, ka := range spec.KubernetesAccess {
		named = append(named, ka.Namespaces...)
	}
	for _, name := range named {
		if _, ok := out[name]; ok {
			continue
		}
		ns := &corev1.Namespace{}
		switch err := r.Get(ctx, types.NamespacedName{Name: name}, ns); {
		case err == nil:
			out[name] = ns
		case !apierrors.IsNotFound(err):
			return nil, err
		}
	}
	return out, nil
}

// serviceAccounts looks up, past the cache (the manager never lists
// ServiceAccounts), each ServiceAccount the requests claim.
func (r *AccessPolicyReconciler) serviceAccounts(ctx context.Context, refs []access.AccountRef) (map[types.NamespacedName]metav1.ObjectMeta, error) {
	found := map[types.NamespacedName]metav1.ObjectMeta{}
	seen := map[types.NamespacedName]bool{}
	for _, ref := range refs {
		key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
		if seen[key] {
			continue
		}
		seen[key] = true
		sa := &metav1.PartialObjectMetadata{}
		sa.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
		switch err := r.APIReader.Get(ctx, key, sa); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("read ServiceAccount %s: %w", key, err)
		default:
			found[key] = sa.ObjectMeta
		}
	}
	return found, nil
}
