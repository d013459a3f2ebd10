package text

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	tests := map[string]struct {
		s    string
		n    int
		want string
	}{
		"short enough":            {"disk full", 9, "disk full"},
		"cut with an ellipsis":    {"disk full", 7, "disk..."},
		"never splits a rune":     {"ééé", 5, "é..."}, // "é" is two bytes
		"backs off to a boundary": {"ééé", 4, "..."},
		"tiny bound":              {"abcdef", 2, ".."},
		"empty":                   {"", 0, ""},
		"exactly at the bound":    {strings.Repeat("a", 256), 256, strings.Repeat("a", 256)},
		"one over the bound":      {strings.Repeat("a", 257), 256, strings.Repeat("a", 253) + "..."},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Truncate(tc.s, tc.n)
			if got != tc.want {
				t.Fatalf("Truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
			}
			if len(got) > max(tc.n, 0) || !utf8.ValidString(got) {
				t.Fatalf("%q is not within %d bytes of valid UTF-8", got, tc.n)
			}
		})
	}
}
