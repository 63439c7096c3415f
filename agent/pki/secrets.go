package pki

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// GossipKey returns a new gossip encryption key: 32 random bytes (AES-256
// for memberlist), base64 standard encoding.
func GossipKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pki: gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeGossipKey decodes a base64 (standard encoding) gossip key and checks
// it is 16, 24 or 32 bytes, the AES key sizes memberlist accepts. Leading and
// trailing white space (a key file's newline) is ignored.
func DecodeGossipKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("pki: the gossip key is empty; use the gossip_key flotilla_cluster generated")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("pki: the gossip key is not base64 (standard encoding): %w; use the gossip_key flotilla_cluster generated", err)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("pki: the gossip key is %d bytes; it must be 16, 24 or 32 (AES-128/192/256); use the gossip_key flotilla_cluster generated", len(b))
}

// JoinToken returns a new join token: 32 random bytes, hex-encoded.
func JoinToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pki: join token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
