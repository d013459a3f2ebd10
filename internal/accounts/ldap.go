package accounts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAP attributes itmanager manages.
const (
	// lockedAttr is the password policy (draft-behera ppolicy) lock: the
	// value lockedForever locks until an administrator unlocks.
	lockedAttr    = "pwdAccountLockedTime"
	lockedForever = "000001010000Z"
	ldapTimeout   = 10 * time.Second
)

// LDAPConfig is how to reach a directory.
type LDAPConfig struct {
	URL, BindDN, BindPassword string
	UsersDN, GroupsDN         string
	ObjectClasses             []string
	// CAPEM verifies the directory's certificate (ldaps://, or StartTLS on
	// ldap:// when set).
	CAPEM []byte
	// Insecure allows ldap:// without StartTLS (spec.ldap.insecure): the
	// bind password then travels in clear text. Without it such a URL is
	// refused before anything is sent.
	Insecure bool
	Delete   bool // offboardAction Delete
}

// LDAP provisions uid=<user> entries under UsersDN and groupOfNames
// membership under GroupsDN. Accounts are locked with pwdAccountLockedTime,
// so the directory needs the password policy overlay (OpenLDAP ppolicy).
type LDAP struct {
	cfg  LDAPConfig
	conn *ldap.Conn
}

var _ Provider = (*LDAP)(nil)

// DialLDAP connects and binds.
func DialLDAP(ctx context.Context, cfg LDAPConfig) (*LDAP, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, &ConfigError{Msg: fmt.Sprintf("spec.ldap.url: %v", err)}
	}
	// The API server refuses this too; an object stored before that rule
	// existed still never sends a password in the clear.
	if u.Scheme == "ldap" && len(cfg.CAPEM) == 0 && !cfg.Insecure {
		return nil, &ConfigError{Msg: "spec.ldap.url: ldap:// sends the bind password in clear text; use ldaps://, StartTLS (set spec.ldap.caSecretRef), or set spec.ldap.insecure: true"}
	}
	var tlsCfg *tls.Config
	if len(cfg.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, &ConfigError{Msg: "spec.ldap.caSecretRef: no PEM certificate in the referenced key"}
		}
		host := u.Hostname()
		tlsCfg = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	}
	dialer := &net.Dialer{Timeout: ldapTimeout}
	if d, ok := ctx.Deadline(); ok {
		dialer.Deadline = d
	}
	opts := []ldap.DialOpt{ldap.DialWithDialer(dialer)}
	if tlsCfg != nil {
		opts = append(opts, ldap.DialWithTLSConfig(tlsCfg))
	}
	conn, err := ldap.DialURL(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.URL, err)
	}
	conn.SetTimeout(ldapTimeout)
	if u.Scheme == "ldap" && tlsCfg != nil {
		if err := conn.StartTLS(tlsCfg); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", cfg.URL, err)
		}
	}
	if err := conn.Bind(cfg.BindDN, cfg.BindPassword); err != nil {
		_ = conn.Close()
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return nil, &ConfigError{Msg: fmt.Sprintf("bind as %s: invalid credentials (spec.ldap.bindDN, spec.ldap.bindPasswordSecretRef)", cfg.BindDN)}
		}
		return nil, fmt.Errorf("bind as %s: %w", cfg.BindDN, err)
	}
	if len(cfg.ObjectClasses) == 0 {
		cfg.ObjectClasses = []string{"inetOrgPerson"}
	}
	return &LDAP{cfg: cfg, conn: conn}, nil
}

// Close unbinds.
func (l *LDAP) Close() error { return l.conn.Close() }

// OffboardDeletes follows spec.ldap.offboardAction.
func (l *LDAP) OffboardDeletes() bool { return l.cfg.Delete }

// Check reads usersDN (and groupsDN): the bind worked and both exist.
func (l *LDAP) Check(context.Context) error {
	for field, dn := range map[string]string{"spec.ldap.usersDN": l.cfg.UsersDN, "spec.ldap.groupsDN": l.cfg.GroupsDN} {
		if dn == "" {
			continue
		}
		if _, err := l.conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
			"(objectClass=*)", []string{"dn"}, nil)); err != nil {
			if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return &ConfigError{Msg: fmt.Sprintf("%s %q does not exist", field, dn)}
			}
			return fmt.Errorf("read %s %q: %w", field, dn, err)
		}
	}
	return nil
}

// UserDN is the DN of a person's entry.
func (l *LDAP) UserDN(user string) string {
	return "uid=" + ldap.EscapeDN(user) + "," + l.cfg.UsersDN
}

func (l *LDAP) groupDN(group string) string {
	return "cn=" + ldap.EscapeDN(group) + "," + l.cfg.GroupsDN
}

type attr struct {
	name   string
	values []string
}

// attributes are the entry's person attributes, in the order written.
func (l *LDAP) attributes(a Account) []attr {
	p := a.Person
	sn := p.DisplayName
	if f := strings.Fields(sn); len(f) > 0 {
		sn = f[len(f)-1]
	}
	manager := []string(nil)
	if p.Manager != "" {
		manager = []string{l.UserDN(p.Manager)}
	}
	return []attr{
		{"cn", []string{p.DisplayName}},
		{"sn", []string{sn}},
		{"displayName", []string{p.DisplayName}},
		{"mail", []string{p.Email}},
		{"title", optional(p.Title)},
		{"departmentNumber", optional(p.Department)},
		{"employeeType", optional(string(p.EmploymentType))},
		{"manager", manager},
	}
}

func optional(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

var entryAttrs = []string{"description", lockedAttr, "cn", "sn", "displayName", "mail", "title", "departmentNumber", "employeeType", "manager"}

// entry reads the person's entry: nil when missing, a *ConflictError when
// it does not carry this request's mark.
func (l *LDAP) entry(a Account) (*ldap.Entry, error) {
	dn := l.UserDN(a.User)
	res, err := l.conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
		"(objectClass=*)", entryAttrs, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dn, err)
	}
	if len(res.Entries) == 0 {
		return nil, nil
	}
	e := res.Entries[0]
	mark := ""
	for _, d := range e.GetAttributeValues("description") {
		if m, ok := strings.CutPrefix(d, OwnerMarkPrefix); ok {
			mark = m
		}
	}
	if reason := ownerReason(mark, a.Owner); reason != "" {
		return nil, &ConflictError{ID: dn, Reason: reason}
	}
	return e, nil
}

// Observe reports the entry and its group memberships.
func (l *LDAP) Observe(_ context.Context, a Account) (Observed, error) {
	e, err := l.entry(a)
	if err != nil || e == nil {
		return Observed{}, err
	}
	groups, err := l.memberOf(e.DN)
	if err != nil {
		return Observed{}, err
	}
	names := make([]string, 0, len(groups))
	for _, g := range groups {
		names = append(names, g.GetAttributeValue("cn"))
	}
	slices.Sort(names)
	return Observed{Exists: true, ID: e.DN, Enabled: e.GetAttributeValue(lockedAttr) == "", Groups: names}, nil
}

// Ensure adds the entry, locked, with the ownership mark, or brings its
// person attributes up to date (writing only what differs).
func (l *LDAP) Ensure(_ context.Context, a Account) (Result, error) {
	e, err := l.entry(a)
	if err != nil {
		return Result{}, err
	}
	dn := l.UserDN(a.User)
	if e == nil {
		add := ldap.NewAddRequest(dn, nil)
		add.Attribute("objectClass", l.cfg.ObjectClasses)
		add.Attribute("uid", []string{a.User})
		add.Attribute("description", []string{OwnerMarkPrefix + string(a.Owner)})
		for _, at := range l.attributes(a) {
			if len(at.values) > 0 {
				add.Attribute(at.name, at.values)
			}
		}
		// Created locked: enabling is a separate, recorded step.
		add.Attribute(lockedAttr, []string{lockedForever})
		if err := l.conn.Add(add); err != nil {
			if ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
				return Result{}, fmt.Errorf("%s appeared while creating it; retrying", dn)
			}
			if ldap.IsErrorWithCode(err, ldap.LDAPResultUndefinedAttributeType) || ldap.IsErrorWithCode(err, ldap.LDAPResultObjectClassViolation) {
				return Result{}, &ConfigError{Msg: fmt.Sprintf("add %s: %v (the directory needs the password policy overlay for %s, and spec.ldap.userObjectClasses must allow the person attributes)", dn, err, lockedAttr)}
			}
			return Result{}, fmt.Errorf("add %s: %w", dn, err)
		}
		return Result{ID: dn}, nil
	}
	mod := ldap.NewModifyRequest(dn, nil)
	for _, at := range l.attributes(a) {
		if slices.Equal(e.GetAttributeValues(at.name), at.values) {
			continue
		}
		if len(at.values) == 0 {
			mod.Delete(at.name, nil)
		} else {
			mod.Replace(at.name, at.values)
		}
	}
	if len(mod.Changes) > 0 {
		if err := l.conn.Modify(mod); err != nil {
			return Result{}, fmt.Errorf("update %s: %w", dn, err)
		}
	}
	return Result{ID: dn}, nil
}

// SetEnabled unlocks or locks the entry; it writes only on a change.
func (l *LDAP) SetEnabled(_ context.Context, a Account, enabled bool) (Result, error) {
	e, err := l.entry(a)
	if err != nil {
		return Result{}, err
	}
	if e == nil {
		return Result{}, fmt.Errorf("%s does not exist", l.UserDN(a.User))
	}
	locked := e.GetAttributeValue(lockedAttr) != ""
	if locked == !enabled {
		return Result{ID: e.DN}, nil
	}
	mod := ldap.NewModifyRequest(e.DN, nil)
	if enabled {
		mod.Delete(lockedAttr, nil)
	} else {
		mod.Replace(lockedAttr, []string{lockedForever})
	}
	if err := l.conn.Modify(mod); err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", map[bool]string{true: "unlock", false: "lock"}[enabled], e.DN, err)
	}
	return Result{ID: e.DN}, nil
}

// memberOf lists the groups under GroupsDN that have dn as a member.
func (l *LDAP) memberOf(dn string) ([]*ldap.Entry, error) {
	if l.cfg.GroupsDN == "" {
		return nil, nil
	}
	res, err := l.conn.Search(ldap.NewSearchRequest(l.cfg.GroupsDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 10, false,
		fmt.Sprintf("(&(objectClass=groupOfNames)(member=%s))", ldap.EscapeFilter(dn)), []string{"cn", "description", "member"}, nil))
	if err != nil {
		return nil, fmt.Errorf("search groups of %s: %w", dn, err)
	}
	return res.Entries, nil
}

func managedGroup(e *ldap.Entry) bool {
	return slices.Contains(e.GetAttributeValues("description"), GroupMark)
}

// SyncGroups makes the entry a member of exactly a.Groups among the groups
// itmanager manages: a missing group is created (marked), a group that
// exists without the mark is never changed (a *ConflictError names it), and
// a managed group left without members is deleted (groupOfNames needs one).
func (l *LDAP) SyncGroups(_ context.Context, a Account) error {
	if l.cfg.GroupsDN == "" {
		return nil
	}
	dn := l.UserDN(a.User)
	current, err := l.memberOf(dn)
	if err != nil {
		return err
	}
	var errs []error
	have := map[string]bool{}
	for _, g := range current {
		name := g.GetAttributeValue("cn")
		have[name] = true
		if slices.Contains(a.Groups, name) || !managedGroup(g) {
			continue
		}
		if len(g.GetAttributeValues("member")) <= 1 {
			if err := l.conn.Del(ldap.NewDelRequest(g.DN, nil)); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				errs = append(errs, fmt.Errorf("delete empty group %s: %w", g.DN, err))
			}
			continue
		}
		mod := ldap.NewModifyRequest(g.DN, nil)
		mod.Delete("member", []string{dn})
		if err := l.conn.Modify(mod); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchAttribute) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", dn, g.DN, err))
		}
	}
	for _, name := range a.Groups {
		if have[name] {
			continue
		}
		if err := l.join(dn, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *LDAP) join(member, group string) error {
	gdn := l.groupDN(group)
	res, err := l.conn.Search(ldap.NewSearchRequest(gdn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
		"(objectClass=*)", []string{"description"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) || (err == nil && len(res.Entries) == 0) {
		add := ldap.NewAddRequest(gdn, nil)
		add.Attribute("objectClass", []string{"groupOfNames"})
		add.Attribute("cn", []string{group})
		add.Attribute("description", []string{GroupMark})
		add.Attribute("member", []string{member})
		err := l.conn.Add(add)
		if err == nil {
			return nil
		}
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
			return fmt.Errorf("create group %s: %w", gdn, err)
		}
		// Another person joining at the same moment created it: join it
		// as it is (if it is ours).
		if res, err = l.conn.Search(ldap.NewSearchRequest(gdn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
			"(objectClass=*)", []string{"description"}, nil)); err == nil && len(res.Entries) == 0 {
			return fmt.Errorf("group %s vanished while joining it", gdn)
		}
	}
	if err != nil {
		return fmt.Errorf("read group %s: %w", gdn, err)
	}
	if !managedGroup(res.Entries[0]) {
		return &ConflictError{ID: gdn, Reason: "exists and was not created by itmanager; membership is not added"}
	}
	mod := ldap.NewModifyRequest(gdn, nil)
	mod.Add("member", []string{member})
	if err := l.conn.Modify(mod); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultAttributeOrValueExists) {
		return fmt.Errorf("add %s to %s: %w", member, gdn, err)
	}
	return nil
}

// Delete leaves every managed group and deletes the entry.
func (l *LDAP) Delete(ctx context.Context, a Account) error {
	e, err := l.entry(a)
	if err != nil || e == nil {
		return err
	}
	if err := l.SyncGroups(ctx, Account{User: a.User, Owner: a.Owner}); err != nil {
		return err
	}
	if err := l.conn.Del(ldap.NewDelRequest(e.DN, nil)); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return fmt.Errorf("delete %s: %w", e.DN, err)
	}
	return nil
}
