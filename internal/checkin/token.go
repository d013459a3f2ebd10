package checkin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
)

// Annotations on the device Lease and the enrolment Secret.
const (
	// AnnotationTokenHash holds the hex SHA-256 of the device token. It is
	// the only form of the token the operator keeps (the Secret that holds
	// the token is cached as metadata only).
	AnnotationTokenHash = "itmanager.io/token-sha256"
	// AnnotationSequence holds the sequence of the last accepted check-in.
	AnnotationSequence = "itmanager.io/checkin-sequence"
)

// NewToken returns a random device token (256 bits) and its hash.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken is the hex SHA-256 of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// tokenMatches compares a presented token with a stored hash in time that
// does not depend on where they differ. An empty stored hash never matches.
func tokenMatches(presented, storedHash string) bool {
	want, err := hex.DecodeString(storedHash)
	got := sha256.Sum256([]byte(presented))
	if err != nil || len(want) != sha256.Size {
		// Still spend the comparison, so a missing enrolment costs the same.
		subtle.ConstantTimeCompare(got[:], make([]byte, sha256.Size))
		return false
	}
	return subtle.ConstantTimeCompare(got[:], want) == 1
}
