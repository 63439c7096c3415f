package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// TokenHash returns the lower-case hex SHA-256 of an API token, leading and
// trailing white space (a token file's newline) ignored: what an agent keeps
// on disk instead of the token. Tokens are 32 random bytes (JoinToken), so a
// plain, unsalted hash is enough; it is not meant for passwords.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(h[:])
}

// ParseTokenHash parses a token hash as TokenHash writes it: 64 hex digits,
// optionally prefixed with "sha256:", surrounding white space ignored.
func ParseTokenHash(s string) ([32]byte, error) {
	var h [32]byte
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) != hex.EncodedLen(len(h)) {
		return h, fmt.Errorf("pki: the API token hash is %d characters; it must be 64 hex digits (optionally after \"sha256:\"), as TokenHash writes it; store the hash, not the token", len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("pki: the API token hash is not hex: %w; it must be 64 hex digits, as TokenHash writes it", err)
	}
	return h, nil
}

// TokenMatches reports whether token (surrounding white space ignored)
// hashes to hash, in constant time. An empty token never matches.
func TokenMatches(hash [32]byte, token string) bool {
	token = strings.TrimSpace(token)
	if token == "" {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], hash[:]) == 1
}
