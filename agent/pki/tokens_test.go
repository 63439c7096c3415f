package pki

import (
	"strings"
	"testing"
)

func TestTokenHash(t *testing.T) {
	// As `printf %s "$token" | sha256sum` prints them.
	for _, tc := range []struct {
		name  string
		token string
		want  string
	}{
		{"plain", "secret", "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"},
		{"surrounding white space", " secret\n", "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"},
		{"case matters", "Secret", "7e32a729b1226ed1270f282a8c63054d09b26bc9ec53ea69771ce38158dfade8"},
		{"empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TokenHash(tc.token); got != tc.want {
				t.Errorf("TokenHash(%q) = %s; want %s", tc.token, got, tc.want)
			}
		})
	}
}

func TestParseTokenHash(t *testing.T) {
	hash := TokenHash("secret")
	for _, tc := range []struct {
		name string
		in   string
		want string // an error substring; "" when it parses to the hash of "secret"
	}{
		{"as TokenHash writes it", hash, ""},
		{"with a newline", hash + "\n", ""},
		{"with a prefix", "sha256:" + hash, ""},
		{"with a prefix and white space", "  sha256:" + hash + "\n", ""},
		{"upper case", strings.ToUpper(hash), ""},
		{"empty", "", "0 characters"},
		{"too short", hash[:63], "63 characters"},
		{"too long", hash + "0", "65 characters"},
		{"the token itself", "secret", "store the hash, not the token"},
		{"not hex", "g" + hash[1:], "not hex"},
		{"white space after the prefix", "sha256: " + hash, "65 characters"},
		{"another algorithm", "sha512:" + hash, "71 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseTokenHash(tc.in)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !TokenMatches(h, "secret") {
					t.Errorf("ParseTokenHash(%q) does not match the token", tc.in)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseTokenHash(%q) error = %v; want one containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestTokenMatches(t *testing.T) {
	h, err := ParseTokenHash(TokenHash("secret"))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := ParseTokenHash(TokenHash(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		hash  [32]byte
		token string
		want  bool
	}{
		{"the token", h, "secret", true},
		{"with white space", h, "secret\r\n", true},
		{"another token", h, "secret2", false},
		{"another case", h, "SECRET", false},
		{"empty", h, "", false},
		{"empty against the hash of empty", empty, "", false},
		{"blank against the hash of empty", empty, "  ", false},
		{"zero hash", [32]byte{}, "secret", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TokenMatches(tc.hash, tc.token); got != tc.want {
				t.Errorf("TokenMatches(%q) = %v; want %v", tc.token, got, tc.want)
			}
		})
	}
}
