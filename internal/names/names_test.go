package names

import (
	"strings"
	"testing"
)

func TestDerive(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example.internal"
	tests := map[string]struct {
		prefix, name string
		max          int
		want         string
	}{
		"fits":              {"node-", "worker-1", 63, "node-worker-1"},
		"exactly the limit": {"node-", strings.Repeat("n", 58), 63, "node-" + strings.Repeat("n", 58)},
		"too long":          {"node-", long, 63, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Derive(tc.prefix, tc.name, tc.max)
			if len(got) > tc.max {
				t.Fatalf("Derive(%q, %q) = %q is %d long, limit %d", tc.prefix, tc.name, got, len(got), tc.max)
			}
			if tc.want != "" && got != tc.want {
				t.Fatalf("Derive(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
			}
			if got != Derive(tc.prefix, tc.name, tc.max) {
				t.Fatal("Derive is not deterministic")
			}
		})
	}
	// Names that share the kept prefix still differ, and never end the kept
	// part with a separator.
	a, b := NodeDevice(long+"-a"), NodeDevice(long+"-b")
	if a == b {
		t.Fatalf("two long names collide: %q", a)
	}
	if got := Derive("x-", strings.Repeat("a", 49)+"....bbbbbbbbbbbbbbbbbbb", 63); strings.Contains(got, ".-") {
		t.Fatalf("kept part ends with a separator: %q", got)
	}
}
