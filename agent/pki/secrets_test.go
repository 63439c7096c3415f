package pki

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestGossipKey(t *testing.T) {
	k, err := GossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeGossipKey(k + "\n") // as read from a key file
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 32 {
		t.Errorf("gossip key is %d bytes; want 32", len(b))
	}
	if k2, _ := GossipKey(); k2 == k {
		t.Error("two gossip keys are equal")
	}
}

func TestDecodeGossipKey(t *testing.T) {
	enc := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	for _, tc := range []struct {
		name    string
		key     string
		wantLen int    // when valid
		wantErr string // when not
	}{
		{"16 bytes", enc(16), 16, ""},
		{"24 bytes", enc(24), 24, ""},
		{"32 bytes", enc(32), 32, ""},
		{"empty", "", 0, "empty"},
		{"blank", " \n", 0, "empty"},
		{"not base64", "this is not base64!", 0, "not base64"},
		{"URL encoding", strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb})), 0, "not base64"},
		{"15 bytes", enc(15), 0, "15 bytes"},
		{"31 bytes", enc(31), 0, "31 bytes"},
		{"33 bytes", enc(33), 0, "33 bytes"},
		{"64 bytes", enc(64), 0, "64 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := DecodeGossipKey(tc.key)
			if tc.wantErr == "" {
				if err != nil || len(b) != tc.wantLen {
					t.Fatalf("DecodeGossipKey = %d bytes, %v; want %d bytes", len(b), err, tc.wantLen)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestJoinToken(t *testing.T) {
	tok, err := JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := hex.DecodeString(tok); err != nil || len(b) != 32 {
		t.Errorf("join token %q: %d bytes, %v; want 32 hex-encoded bytes", tok, len(b), err)
	}
	if tok2, _ := JoinToken(); tok2 == tok {
		t.Error("two join tokens are equal")
	}
}
