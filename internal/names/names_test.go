package names

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestDeriveKnownValues pins Derive's output: a derived name is stored in
// the cluster (a Device per Node, generated objects), so a change of the
// cut, the hash or its length would orphan every object named before. The
// expected hashes are the first 10 hex characters of the SHA-256 of
// prefix+name (checked with sha256sum).
func TestDeriveKnownValues(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example.internal"
	tests := map[string]struct {
		prefix, name string
		max          int
		want         string
	}{
		"fits":              {"node-", "worker-1", 63, "node-worker-1"},
		"exactly the limit": {"node-", strings.Repeat("n", 58), 63, "node-" + strings.Repeat("n", 58)},
		"one over the limit": {"node-", strings.Repeat("n", 59), 63,
			"node-" + strings.Repeat("n", 47) + "-" + "aa55977fba"},
		"too long":                   {"node-", long, 63, "node-" + strings.Repeat("a", 47) + "-cea9b298df"},
		"shares the kept part (a)":   {"node-", long + "-a", 63, "node-" + strings.Repeat("a", 47) + "-fbdd71aa93"},
		"shares the kept part (b)":   {"node-", long + "-b", 63, "node-" + strings.Repeat("a", 47) + "-025bba5151"},
		"separators before the cut":  {"x-", strings.Repeat("a", 49) + "....bbbbbbbbbbbbbbbbbbb", 63, "x-" + strings.Repeat("a", 49) + "-b77b2f3850"},
		"a short limit":              {"itm-", "policy.with.a.rather.long.name-that-goes-on", 20, "itm-polic-e8599a39d7"},
		"empty name under the limit": {"itm-", "", 63, "itm-"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Derive(tc.prefix, tc.name, tc.max); got != tc.want {
				t.Fatalf("Derive(%q, %q, %d) = %q, want %q", tc.prefix, tc.name, tc.max, got, tc.want)
			}
		})
	}
	if got, want := NodeDevice("worker-1"), "node-worker-1"; got != want {
		t.Fatalf("NodeDevice = %q, want %q", got, want)
	}
}

var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// TestDeriveProperties holds over many inputs: the limit is kept, a name
// that fits is unchanged, a shortened one keeps as much of the name as fits
// with no separator before the suffix, stays a DNS subdomain, and no two
// inputs give the same name.
func TestDeriveProperties(t *testing.T) {
	seen := map[string]string{}
	parts := []string{"a", "b", "-", ".", "node", "7"}
	for n := 1; n <= 90; n++ {
		for i, p := range parts {
			// Names of every length, ending in every kind of character.
			name := "w" + strings.Repeat(parts[(i+1)%len(parts)], n/2) + strings.Repeat("x", n-n/2) + p + "z"
			full := "node-" + name
			got := NodeDevice(name)
			if len(got) > 63 {
				t.Fatalf("NodeDevice(%q) = %q is %d long", name, got, len(got))
			}
			if len(full) <= 63 {
				if got != full {
					t.Fatalf("NodeDevice(%q) = %q, want it unchanged", name, got)
				}
			} else {
				kept, suffix, ok := cut(got)
				if !ok || len(suffix) != 10 || !strings.HasPrefix(full, kept) || len(kept) < 63-11-3 {
					t.Fatalf("NodeDevice(%q) = %q: not <prefix of the name>-<10 hex>", name, got)
				}
				if strings.HasSuffix(kept, "-") || strings.HasSuffix(kept, ".") {
					t.Fatalf("NodeDevice(%q) = %q: the kept part ends with a separator", name, got)
				}
			}
			if !dnsSubdomain.MatchString(got) {
				t.Fatalf("NodeDevice(%q) = %q is not a DNS subdomain", name, got)
			}
			if prev, dup := seen[got]; dup && prev != name {
				t.Fatalf("NodeDevice(%q) = NodeDevice(%q) = %q", name, prev, got)
			}
			seen[got] = name
		}
	}
	if len(seen) < 500 {
		t.Fatalf("only %d distinct inputs", len(seen))
	}
}

// cut splits a shortened name at its last '-' into the kept part and the
// suffix, which must be lowercase hex.
func cut(s string) (string, string, bool) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return "", "", false
	}
	suffix := s[i+1:]
	var x uint64
	if _, err := fmt.Sscanf(suffix, "%x", &x); err != nil || strings.ToLower(suffix) != suffix {
		return "", "", false
	}
	return s[:i], suffix, true
}
