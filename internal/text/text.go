// Package text bounds strings the API limits: condition messages, reasons,
// reported facts.
package text

import "unicode/utf8"

// Truncate returns s if it has at most n bytes; otherwise its longest
// prefix that ends on a rune boundary and, with "..." appended, fits in n
// bytes. A byte bound is never looser than the API's character bound, and a
// cut never splits a character.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n < 3 {
		return "..."[:max(n, 0)]
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
