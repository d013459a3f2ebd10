// Package names derives the names of generated objects. A derived name that
// would exceed a Kubernetes limit is shortened with a hash suffix, so two
// different inputs never collide and the same input always gives the same name.
package names

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// hashLen is the number of hex characters of the suffix: 10 hex characters are
// 40 bits, enough that two names sharing a long prefix do not collide.
const hashLen = 10

// Derive joins prefix and name and, when the result is longer than max,
// keeps as much of it as fits before "-<hash of the whole>". The result never
// ends with '-' or '.' before the suffix, so it stays a valid DNS name.
func Derive(prefix, name string, maxLen int) string {
	full := prefix + name
	if len(full) <= maxLen {
		return full
	}
	sum := sha256.Sum256([]byte(full))
	suffix := hex.EncodeToString(sum[:])[:hashLen]
	keep := strings.TrimRight(full[:maxLen-hashLen-1], "-.")
	return keep + "-" + suffix
}

// NodeDevice is the Device that mirrors the Node named node.
func NodeDevice(node string) string { return Derive("node-", node, 63) }
