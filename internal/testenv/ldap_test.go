//go:build integration

package testenv

import (
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// TestLDAPHaltRestart proves what the LDAP outage spec relies on: after Halt
// nothing answers on the URL, and Restart brings the same directory back on
// the same URL with what it held.
func TestLDAPHaltRestart(t *testing.T) {
	s, err := StartLDAP(LDAPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	c, err := s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	dn := "uid=kept," + s.PeopleDN
	if err := c.Add(addRequest(dn, map[string][]string{"objectClass": {"inetOrgPerson"}, "uid": {"kept"}, "cn": {"Kept"}, "sn": {"Kept"}})); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	url := s.URL

	if err := s.Halt(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running after Halt")
	}
	if c, err := ldap.DialURL(url); err == nil {
		_ = c.Close()
		t.Fatalf("%s answers after Halt", url)
	}
	if err := s.Halt(); err == nil {
		t.Error("a second Halt succeeded")
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.URL != url {
		t.Fatalf("URL after Restart = %s, want %s", s.URL, url)
	}
	if err := s.Restart(); err == nil {
		t.Error("Restart of a running slapd succeeded")
	}
	c, err = s.Admin()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 10, false, "(objectClass=*)", []string{"uid"}, nil))
	if err != nil {
		t.Fatalf("entry added before Halt: %v", err)
	}
	if got := res.Entries[0].GetAttributeValue("uid"); got != "kept" {
		t.Fatalf("uid = %q, want kept", got)
	}
}
