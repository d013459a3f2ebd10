//go:build integration

package accounts_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"k8s.io/apimachinery/pkg/types"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/accounts"
	"github.com/itmanager-io/itmanager/internal/testenv"
)

// These tests need a real OpenLDAP slapd (hack/install-slapd.sh installs it;
// make test runs that first); each run starts its own on 127.0.0.1. They are
// built only with the integration tag (make test): without slapd every test
// of the package fails, none is skipped.

var server *testenv.LDAPServer

func TestMain(m *testing.M) {
	var err error
	server, err = testenv.StartLDAP(testenv.LDAPOptions{TLS: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the LDAP provider's tests need slapd: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = server.Stop()
	os.Exit(code)
}

func dial(t *testing.T, mutate func(*accounts.LDAPConfig)) *accounts.LDAP {
	t.Helper()
	cfg := accounts.LDAPConfig{URL: server.URL, Insecure: true, BindDN: server.AdminDN, BindPassword: server.AdminPassword,
		UsersDN: server.PeopleDN, GroupsDN: server.GroupsDN}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := accounts.DialLDAP(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func account(user, uid string, groups ...string) accounts.Account {
	return accounts.Account{User: user, Owner: types.UID("uid-" + uid), Groups: groups,
		Person: itmv1.Person{DisplayName: "Ada " + user, Email: user + "@example.org", Title: "Engineer", EmploymentType: itmv1.EmploymentTypeEmployee}}
}

// canBind says whether the person can sign in with password.
func canBind(t *testing.T, dn, password string) bool {
	t.Helper()
	c, err := ldap.DialURL(server.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	return c.Bind(dn, password) == nil
}

func setPassword(t *testing.T, dn, password string) {
	t.Helper()
	c, err := server.Admin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	mod := ldap.NewModifyRequest(dn, nil)
	mod.Replace("userPassword", []string{password})
	if err := c.Modify(mod); err != nil {
		t.Fatal(err)
	}
}

func members(t *testing.T, group string) []string {
	t.Helper()
	c, err := server.Admin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest("cn="+group+","+server.GroupsDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false,
		"(objectClass=*)", []string{"member"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	m := res.Entries[0].GetAttributeValues("member")
	slices.Sort(m)
	return m
}

func TestLDAPCheck(t *testing.T) {
	ctx := context.Background()
	if err := dial(t, nil).Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := dial(t, func(c *accounts.LDAPConfig) { c.UsersDN = "ou=nobody," + server.BaseDN }).Check(ctx); !accounts.IsConfig(err) {
		t.Fatalf("missing usersDN: got %v, want a ConfigError", err)
	}
	_, err := accounts.DialLDAP(ctx, accounts.LDAPConfig{URL: server.URL, Insecure: true, BindDN: server.AdminDN, BindPassword: "wrong", UsersDN: server.PeopleDN})
	if !accounts.IsConfig(err) {
		t.Fatalf("wrong password: got %v, want a ConfigError", err)
	}
	_, err = accounts.DialLDAP(ctx, accounts.LDAPConfig{URL: server.URL, BindDN: server.AdminDN, BindPassword: server.AdminPassword,
		UsersDN: server.PeopleDN, CAPEM: []byte("not a certificate")})
	if !accounts.IsConfig(err) {
		t.Fatalf("bad CA: got %v, want a ConfigError", err)
	}
}

func TestLDAPLifecycle(t *testing.T) {
	ctx := context.Background()
	l := dial(t, nil)
	a := account("ada", "1", "eng")
	dn := l.UserDN("ada")

	if o, err := l.Observe(ctx, a); err != nil || o.Exists {
		t.Fatalf("before: %+v %v", o, err)
	}
	r, err := l.Ensure(ctx, a)
	if err != nil || r.ID != dn {
		t.Fatalf("Ensure: %+v %v", r, err)
	}
	if o, _ := l.Observe(ctx, a); !o.Exists || o.Enabled || o.ID != dn {
		t.Fatalf("created: %+v, want existing and locked", o)
	}
	// The person sets a password (ppolicy unlocks an account whose
	// password an administrator resets), and the account is locked again,
	// as the controller would while the start date is ahead.
	setPassword(t, dn, "pw")
	if _, err := l.SetEnabled(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	if canBind(t, dn, "pw") {
		t.Fatal("a created (locked) account can sign in")
	}
	if _, err := l.Ensure(ctx, a); err != nil {
		t.Fatalf("Ensure again: %v", err)
	}
	if _, err := l.SetEnabled(ctx, a, true); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncGroups(ctx, a); err != nil {
		t.Fatal(err)
	}
	if o, _ := l.Observe(ctx, a); !o.Enabled || !slices.Equal(o.Groups, []string{"eng"}) {
		t.Fatalf("enabled: %+v", o)
	}
	if !canBind(t, dn, "pw") {
		t.Fatal("an enabled account cannot sign in")
	}

	// Attributes follow the request.
	a.Person.Title = "Staff Engineer"
	a.Person.Department = ""
	if _, err := l.Ensure(ctx, a); err != nil {
		t.Fatal(err)
	}
	c, _ := server.Admin()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false, "(objectClass=*)", []string{"title", "mail", "sn", "description"}, nil))
	_ = c.Close()
	if err != nil {
		t.Fatal(err)
	}
	e := res.Entries[0]
	if e.GetAttributeValue("title") != "Staff Engineer" || e.GetAttributeValue("mail") != "ada@example.org" || e.GetAttributeValue("sn") != "ada" ||
		e.GetAttributeValue("description") != accounts.OwnerMarkPrefix+string(a.Owner) {
		t.Fatalf("entry attributes: %v", e.Attributes)
	}

	// Offboarding by disabling: locked and out of every group.
	if _, err := l.SetEnabled(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	left := a
	left.Groups = nil
	if err := l.SyncGroups(ctx, left); err != nil {
		t.Fatal(err)
	}
	if canBind(t, dn, "pw") {
		t.Fatal("a disabled account can still sign in")
	}
	if o, _ := l.Observe(ctx, a); !o.Exists || o.Enabled || len(o.Groups) != 0 {
		t.Fatalf("disabled: %+v", o)
	}
	if m := members(t, "eng"); m != nil {
		t.Fatalf("the emptied managed group should be gone, has %v", m)
	}
	if err := l.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if o, _ := l.Observe(ctx, a); o.Exists {
		t.Fatal("deleted entry still exists")
	}
	if err := l.Delete(ctx, a); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestLDAPGroups(t *testing.T) {
	ctx := context.Background()
	l := dial(t, nil)
	bob, eve := account("bob", "b", "ops", "dev"), account("eve", "e", "ops")
	for _, a := range []accounts.Account{bob, eve} {
		if _, err := l.Ensure(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := l.SyncGroups(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if m := members(t, "ops"); !slices.Equal(m, []string{l.UserDN("bob"), l.UserDN("eve")}) {
		t.Fatalf("ops members: %v", m)
	}
	bob.Groups = []string{"dev"}
	if err := l.SyncGroups(ctx, bob); err != nil {
		t.Fatal(err)
	}
	if m := members(t, "ops"); !slices.Equal(m, []string{l.UserDN("eve")}) {
		t.Fatalf("ops after bob left: %v", m)
	}

	// A group someone else created is never changed.
	c, _ := server.Admin()
	add := ldap.NewAddRequest("cn=finance,"+server.GroupsDN, nil)
	add.Attribute("objectClass", []string{"groupOfNames"})
	add.Attribute("cn", []string{"finance"})
	add.Attribute("member", []string{"cn=admin," + server.BaseDN})
	if err := c.Add(add); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	bob.Groups = []string{"dev", "finance"}
	err := l.SyncGroups(ctx, bob)
	if !accounts.IsConflict(err) {
		t.Fatalf("unmanaged group: got %v, want a conflict", err)
	}
	if m := members(t, "finance"); len(m) != 1 {
		t.Fatalf("unmanaged group changed: %v", m)
	}
	// Deleting leaves the groups it joined.
	if err := l.Delete(ctx, bob); err != nil {
		t.Fatal(err)
	}
	if m := members(t, "dev"); m != nil {
		t.Fatalf("dev should be gone with its only member, has %v", m)
	}
}

func TestLDAPNeverAdopts(t *testing.T) {
	ctx := context.Background()
	l := dial(t, nil)
	// An entry created outside itmanager.
	c, _ := server.Admin()
	add := ldap.NewAddRequest(l.UserDN("carol"), nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("uid", []string{"carol"})
	add.Attribute("cn", []string{"Carol"})
	add.Attribute("sn", []string{"Carol"})
	if err := c.Add(add); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	carol := account("carol", "c1")
	for name, op := range map[string]func() error{
		"Observe":    func() error { _, err := l.Observe(ctx, carol); return err },
		"Ensure":     func() error { _, err := l.Ensure(ctx, carol); return err },
		"SetEnabled": func() error { _, err := l.SetEnabled(ctx, carol, false); return err },
		"Delete":     func() error { return l.Delete(ctx, carol) },
	} {
		if err := op(); !accounts.IsConflict(err) {
			t.Errorf("%s on a foreign entry: got %v, want a conflict", name, err)
		}
	}

	// An entry another request (another UID of the same name) created.
	dan := account("dan", "d1")
	if _, err := l.Ensure(ctx, dan); err != nil {
		t.Fatal(err)
	}
	successor := account("dan", "d2")
	_, err := l.Ensure(ctx, successor)
	if !accounts.IsConflict(err) {
		t.Fatalf("successor: got %v, want a conflict", err)
	}
	if err := l.Delete(ctx, successor); !accounts.IsConflict(err) {
		t.Fatalf("successor deleting: got %v, want a conflict", err)
	}
	if o, _ := l.Observe(ctx, dan); !o.Exists {
		t.Fatal("the original request's entry was touched")
	}
}

// TestLDAPRefusesClearTextBeforeConnecting: without StartTLS or insecure,
// ldap:// is refused as a configuration error before any connection is
// made (the port here answers nothing, so a dial would fail differently).
func TestLDAPRefusesClearTextBeforeConnecting(t *testing.T) {
	ports, err := testenv.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = accounts.DialLDAP(context.Background(), accounts.LDAPConfig{URL: fmt.Sprintf("ldap://127.0.0.1:%d", ports[0]),
		BindDN: server.AdminDN, BindPassword: server.AdminPassword, UsersDN: server.PeopleDN})
	if !accounts.IsConfig(err) || !strings.Contains(err.Error(), "spec.ldap.url") || strings.Contains(err.Error(), "connect to") {
		t.Fatalf("got %v, want a ConfigError naming spec.ldap.url and no connection attempt", err)
	}
}

func TestLDAPTLS(t *testing.T) {
	ctx := context.Background()
	base := accounts.LDAPConfig{BindDN: server.AdminDN, BindPassword: server.AdminPassword, UsersDN: server.PeopleDN}
	for name, tc := range map[string]struct {
		url      string
		ca       []byte
		insecure bool
		want     string // "" for success, else part of the error
	}{
		"ldaps with the CA":                      {server.LDAPSURL, server.CAPEM, false, ""},
		"StartTLS on ldap:// with CA":            {server.URL, server.CAPEM, false, ""},
		"StartTLS on ldap:// with another CA":    {server.URL, otherCA(t), false, "StartTLS"},
		"ldaps without the CA":                   {server.LDAPSURL, nil, false, "certificate"},
		"ldaps with another CA":                  {server.LDAPSURL, otherCA(t), false, "certificate"},
		"ldap:// in clear text with insecure":    {server.URL, nil, true, ""},
		"ldap:// in clear text without insecure": {server.URL, nil, false, "ldap:// sends the bind password in clear text"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			cfg.URL, cfg.CAPEM, cfg.Insecure = tc.url, tc.ca, tc.insecure
			l, err := accounts.DialLDAP(ctx, cfg)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error about %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			if err := l.Check(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// otherCA is a CA that did not sign the server's certificate.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
