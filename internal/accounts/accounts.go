// Package accounts provisions a person's accounts in the places they live
// (AccountProviders): Kubernetes ServiceAccounts with bound-token
// kubeconfigs, and entries in an LDAP directory.
//
// Every provider marks what it creates with the UID of the OnboardingRequest
// that created it, and refuses (with a *ConflictError) to touch anything
// without that mark: an existing account is never adopted, and a later
// request of the same name does not inherit its predecessor's account. Every
// operation is idempotent, so a caller that stopped half-way repeats it and
// finds its own work by the mark.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// Marks on what the providers create.
const (
	// LabelUser names the person a Kubernetes object belongs to.
	LabelUser = "itmanager.io/user"
	// AnnotationOwnerUID records the UID of the OnboardingRequest that
	// created a Kubernetes object.
	AnnotationOwnerUID = "itmanager.io/owner-uid"
	// OwnerMarkPrefix starts the description value that marks an LDAP entry
	// as created by the request with the UID that follows.
	OwnerMarkPrefix = "itmanager.io/owner="
	// GroupMark is the description value of the LDAP groups itmanager
	// created (shared by many people, so no single owner).
	GroupMark = "itmanager.io/managed-group"
)

// Account is what a provider holds for one person.
type Account struct {
	// User is the username: the OnboardingRequest's name.
	User string
	// Owner is the OnboardingRequest's UID, the ownership mark.
	Owner types.UID
	// Person and Groups are copied into directories that keep them.
	Person itmv1.Person
	Groups []string
}

// Observed is what a provider holds for a person now.
type Observed struct {
	// Exists is false when there is no account (then the rest is empty).
	Exists bool
	// ID names the account in the provider: a ServiceAccount, a DN.
	ID string
	// Enabled is true when the person can sign in.
	Enabled bool
	// Groups the account is a member of, where the provider keeps groups.
	Groups []string
}

// Result is what an operation that leaves an account in place reports.
type Result struct {
	// ID names the account in the provider.
	ID string
	// Credentials is the Secret handing the person their credentials, if
	// the provider issues any.
	Credentials *itmv1.ObjectReference
	// RenewAt is when the credentials must be renewed; zero for never.
	RenewAt time.Time
}

// Provider provisions accounts in one place. A Provider is a session: the
// caller opens it for one pass and closes it.
type Provider interface {
	// Check verifies that the provider is reachable and that its
	// credentials and configuration work.
	Check(ctx context.Context) error
	// Observe reports the person's account. An account that exists but
	// does not carry a's ownership mark is a *ConflictError.
	Observe(ctx context.Context, a Account) (Observed, error)
	// Ensure creates the account, disabled, when it is missing and brings
	// its attributes up to date.
	Ensure(ctx context.Context, a Account) (Result, error)
	// SetEnabled enables (issuing or renewing credentials) or disables
	// (revoking them) the account.
	SetEnabled(ctx context.Context, a Account, enabled bool) (Result, error)
	// SyncGroups makes the account a member of exactly a.Groups, where the
	// provider keeps groups.
	SyncGroups(ctx context.Context, a Account) error
	// Delete removes the account and its credentials; an account already
	// gone is success.
	Delete(ctx context.Context, a Account) error
	// OffboardDeletes is true when offboarding deletes accounts rather
	// than disabling them.
	OffboardDeletes() bool
	// Close ends the session.
	Close() error
}

// ConflictError is an account (or group) that exists but that this request
// did not create: never adopted, never changed.
type ConflictError struct {
	// ID names what exists.
	ID string
	// Reason says whose it is, as far as can be told.
	Reason string
}

func (e *ConflictError) Error() string { return fmt.Sprintf("%s %s", e.ID, e.Reason) }

// IsConflict reports whether err is (or wraps) a *ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}

// ConfigError is a provider whose spec or environment cannot work (a
// forbidden namespace, a missing Secret key): retrying does not help until
// someone changes something.
type ConfigError struct {
	Msg string
	// Reason, when set, is the condition reason that names the problem
	// (otherwise the caller's generic one).
	Reason string
}

func (e *ConfigError) Error() string { return e.Msg }

// IsConfig reports whether err is (or wraps) a *ConfigError.
func IsConfig(err error) bool {
	var c *ConfigError
	return errors.As(err, &c)
}

// ConfigReason is the Reason of the *ConfigError err is or wraps, or "".
func ConfigReason(err error) string {
	var c *ConfigError
	if errors.As(err, &c) {
		return c.Reason
	}
	return ""
}

// ownerReason describes whose an account is from the mark it carries.
func ownerReason(mark string, owner types.UID) string {
	switch mark {
	case "":
		return "exists and was not created by itmanager; it is never adopted"
	case string(owner):
		return ""
	default:
		return fmt.Sprintf("was created by another OnboardingRequest (uid %s); it is never taken over", mark)
	}
}
