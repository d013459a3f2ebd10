package checkin

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func TestRotation(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	hosts := []string{"itmanager-checkin.itmanager-system.svc", "127.0.0.1"}
	fresh, err := Issue(nil, hosts, true, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Issue(nil, hosts, true, now)
	if err != nil {
		t.Fatal(err)
	}
	// Certificates are backdated an hour against clock skew.
	twoThirds := now.Add(-time.Hour + (servingLifetime+time.Hour)*2/3)
	mixed := map[string][]byte{keyCACert: other[keyCACert], keyCAKey: other[keyCAKey], keyTLSCert: fresh[keyTLSCert], keyTLSKey: fresh[keyTLSKey]}

	tests := map[string]struct {
		data        map[string][]byte
		hosts       []string
		at          time.Time
		wantCA      bool
		wantServing bool
	}{
		"nothing yet":                            {data: nil, hosts: hosts, at: now, wantCA: true, wantServing: true},
		"fresh":                                  {data: fresh, hosts: hosts, at: now},
		"hosts in another order":                 {data: fresh, hosts: []string{"127.0.0.1", "itmanager-checkin.itmanager-system.svc"}, at: now},
		"just before two thirds of its life":     {data: fresh, hosts: hosts, at: twoThirds.Add(-time.Minute)},
		"past two thirds of its life":            {data: fresh, hosts: hosts, at: twoThirds.Add(time.Minute), wantServing: true},
		"another host":                           {data: fresh, hosts: []string{"checkin.example.com"}, at: now, wantServing: true},
		"serving certificate from another CA":    {data: mixed, hosts: hosts, at: now, wantServing: true},
		"CA within a serving lifetime of expiry": {data: fresh, hosts: hosts, at: now.Add(caLifetime - servingLifetime + time.Hour), wantCA: true, wantServing: true},
		"garbage":                                {data: map[string][]byte{keyCACert: []byte("x"), keyCAKey: []byte("y")}, hosts: hosts, at: now, wantCA: true, wantServing: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ca, serving, reason := Rotation(tc.data, tc.hosts, tc.at)
			if ca != tc.wantCA || serving != tc.wantServing {
				t.Fatalf("Rotation = ca %v, serving %v (%q); want ca %v, serving %v", ca, serving, reason, tc.wantCA, tc.wantServing)
			}
		})
	}
}

func TestIssueServesTheHostsAndKeepsTheCA(t *testing.T) {
	now := time.Now()
	first, err := Issue(nil, []string{"checkin.example.com", "10.0.0.1"}, true, now)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := Issue(first, []string{"checkin.example.com", "10.0.0.1"}, false, now)
	if err != nil {
		t.Fatal(err)
	}
	if string(renewed[keyCACert]) != string(first[keyCACert]) {
		t.Fatal("renewing the serving certificate replaced the CA: every agent would have to be re-enrolled")
	}
	if string(renewed[keyTLSCert]) == string(first[keyTLSCert]) {
		t.Fatal("the serving certificate was not reissued")
	}
	pair, err := tls.X509KeyPair(renewed[keyTLSCert], renewed[keyTLSKey])
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(first[keyCACert])
	for _, host := range []string{"checkin.example.com", "10.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: now}); err != nil {
			t.Errorf("certificate does not verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example.com", Roots: roots, CurrentTime: now}); err == nil {
		t.Error("certificate verifies for a host it was not issued for")
	}
}

func TestTokenMatches(t *testing.T) {
	tok, hash, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := NewToken()
	for _, tc := range []struct {
		name, presented, stored string
		want                    bool
	}{
		{"right token", tok, hash, true},
		{"another token", other, hash, false},
		{"empty stored hash", tok, "", false},
		{"malformed stored hash", tok, "zz", false},
		{"hash presented as the token", hash, hash, false},
	} {
		if got := tokenMatches(tc.presented, tc.stored); got != tc.want {
			t.Errorf("%s: tokenMatches = %v, want %v", tc.name, got, tc.want)
		}
	}
}
