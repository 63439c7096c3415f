package containerd

import (
	"bytes"
	"testing"
)

func TestBoundedBuffer(t *testing.T) {
	b := &boundedBuffer{max: 8}
	for _, w := range []string{"abc", "defgh", "ijk", ""} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want all of it taken", w, n, err)
		}
	}
	if got := b.Bytes(); !bytes.Equal(got, []byte("abcdefgh")) {
		t.Errorf("Bytes = %q, want the first 8 bytes", got)
	}
}
