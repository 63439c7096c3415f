package membership

import (
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"
)

// Packets reach memberlist whole and each in memory of its own: the
// listener's buffer is reused for the next one.
func TestTransportPacketsAreCopies(t *testing.T) {
	tr, err := newTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	to := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.Port()))
	sent := []string{"first packet, the longer one", "second"}
	go func() {
		for _, p := range sent {
			if _, err := tr.WriteTo([]byte(p), to); err != nil {
				t.Error(err)
			}
		}
	}()
	var got [][]byte
	for range sent {
		select {
		case p := <-tr.PacketCh():
			got = append(got, p.Buf)
			if p.From == nil || p.Timestamp.IsZero() {
				t.Errorf("packet %q without its sender or time", p.Buf)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no packet within 5 s")
		}
	}
	for i, p := range sent {
		if string(got[i]) != p {
			t.Errorf("packet %d is %q, want %q", i, got[i], p)
		}
		if cap(got[i]) > 64 {
			t.Errorf("packet %d of %d bytes holds %d bytes of memory", i, len(got[i]), cap(got[i]))
		}
	}
}

func TestTransportAdvertiseAddr(t *testing.T) {
	tr, err := newTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	for _, c := range []struct {
		ip     string
		port   int
		wantIP string
		wantP  int
		err    bool
	}{
		{"", 0, "127.0.0.1", tr.Port(), false},
		{"10.1.2.3", 7946, "10.1.2.3", 7946, false},
		{"10.1.2.3", 0, "10.1.2.3", tr.Port(), false},
		{"not-an-ip", 0, "", 0, true},
	} {
		ip, port, err := tr.FinalAdvertiseAddr(c.ip, c.port)
		if c.err {
			if err == nil {
				t.Errorf("FinalAdvertiseAddr(%q, %d) = %v, %d, want an error", c.ip, c.port, ip, port)
			}
			continue
		}
		if err != nil || ip.String() != c.wantIP || port != c.wantP {
			t.Errorf("FinalAdvertiseAddr(%q, %d) = %v, %d, %v, want %s, %d", c.ip, c.port, ip, port, err, c.wantIP, c.wantP)
		}
	}
}
