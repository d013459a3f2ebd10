package controllers

import (
	"context"
	"slices"
	"time"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/onboarding"
)

// providerTimeout bounds one account's provider calls in a pass.
const providerTimeout = 30 * time.Second

// accountFor is what a provider holds for o in a stage.
func accountFor(o *itmv1.OnboardingRequest, want onboarding.Want) accounts.Account {
	a := accounts.Account{User: o.Name, Owner: o.UID, Person: o.Spec.Person}
	if want == onboarding.WantEnabled {
		a.Groups = slices.Clone(o.Spec.Groups)
	}
	return a
}

func previous(o *itmv1.OnboardingRequest, provider string) *itmv1.AccountStatus {
	for i := range o.Status.Accounts {
		if o.Status.Accounts[i].Provider == provider {
			return &o.Status.Accounts[i]
		}
	}
	return nil
}

// syncAccount brings one provider's account to its wanted state and
// records the outcome (onboarding.Account decides what it is). Nothing
// recorded is ever dropped: an account that could not be undone keeps its
// record until it is, or until force-offboard records it as skipped.
func (r *OnboardingReconciler) syncAccount(ctx context.Context, o *itmv1.OnboardingRequest, w onboarding.AccountWant, p *itmv1.AccountProvider, ps *onboarding.Pass) {
	acct := onboarding.Account{Want: w, Force: ps.Force, Prev: previous(o, w.Provider)}
	notFixed := ""
	if p != nil {
		notFixed = onboarding.NotTheFixedDefault(o, p)
	}
	out, decided := acct.Before(p != nil, notFixed)
	if !decided {
		out = acct.After(r.callProvider(ctx, o, w.Want, p))
	}
	if out.ProviderError {
		provisioningErrors.WithLabelValues(w.Provider).Inc()
	}
	ps.Add(out)
}

// callProvider makes the calls that bring o's account in p to want,
// stopping at the first that fails.
func (r *OnboardingReconciler) callProvider(ctx context.Context, o *itmv1.OnboardingRequest, want onboarding.Want, p *itmv1.AccountProvider) onboarding.Call {
	opCtx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	prov, err := r.Providers.Open(opCtx, p)
	if err != nil {
		return onboarding.Call{Step: onboarding.StepOpen, Err: err}
	}
	defer func() { _ = prov.Close() }()
	a := accountFor(o, want)
	if want == onboarding.WantGone {
		obs, err := prov.Observe(opCtx, a)
		switch {
		case err != nil:
			return onboarding.Call{Step: onboarding.StepObserve, Err: err}
		case !obs.Exists:
			return onboarding.Call{}
		}
		c := onboarding.Call{ID: obs.ID, Exists: true}
		if prov.OffboardDeletes() {
			c.Deleted = true
			if err := prov.Delete(opCtx, a); err != nil {
				c.Step, c.Err = onboarding.StepDelete, err
			}
			return c
		}
		if _, err := prov.SetEnabled(opCtx, a, false); err != nil {
			c.Step, c.Err = onboarding.StepSetEnabled, err
			return c
		}
		if err := prov.SyncGroups(opCtx, a); err != nil {
			c.Step, c.Err = onboarding.StepGroups, err
		}
		return c
	}
	// The provider's own check first: a forbidden or missing namespace,
	// an unreadable usersDN, whatever its status said last.
	if err := prov.Check(opCtx); err != nil {
		return onboarding.Call{Step: onboarding.StepCheck, Err: err}
	}
	if _, err := prov.Ensure(opCtx, a); err != nil {
		return onboarding.Call{Step: onboarding.StepEnsure, Err: err}
	}
	res, err := prov.SetEnabled(opCtx, a, want == onboarding.WantEnabled)
	if err != nil {
		return onboarding.Call{Step: onboarding.StepSetEnabled, Err: err}
	}
	c := onboarding.Call{ID: res.ID, Credentials: res.Credentials, RenewAt: res.RenewAt}
	if err := prov.SyncGroups(opCtx, a); err != nil {
		c.Step, c.Err = onboarding.StepGroups, err
	}
	return c
}
