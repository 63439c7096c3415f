package containerlog

import (
	"context"
	"io"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDriverArgsRoundTrip(t *testing.T) {
	cfg := WriterConfig{Dir: "/var/lib/flotilla/logs/default_web-1/app dir", MaxSize: 1 << 20, MaxFiles: 3}
	args := DriverArgs(cfg)
	if len(args) != 1 || args[DriverCommand] == "" {
		t.Fatalf("DriverArgs = %v: want one key, %q, so the shim's command line has a fixed order", args, DriverCommand)
	}
	// What the shim does with the URI's query (pkg/process.NewBinaryCmd).
	q := url.Values{}
	for k, v := range args {
		q.Set(k, v)
	}
	parsed, _ := url.ParseQuery(q.Encode())
	var argv []string
	for k, vs := range parsed {
		argv = append(argv, k, vs[0])
	}
	if argv[0] != DriverCommand {
		t.Fatalf("argv %q", argv)
	}
	got, err := parseDriverArgs(argv[1:])
	if err != nil || got.Dir != cfg.Dir || got.MaxSize != cfg.MaxSize || got.MaxFiles != cfg.MaxFiles {
		t.Fatalf("parseDriverArgs = %+v, %v; want %+v", got, err, cfg)
	}
	for _, bad := range [][]string{nil, {"dir=/x&max-size=10&max-files=5"}, {"dir=/x&max-size=x&max-files=5"}, {"a", "b"}} {
		if _, err := parseDriverArgs(bad); err == nil {
			t.Errorf("parseDriverArgs(%q) passed", bad)
		}
	}
}

// TestDriveCopiesBothStreamsAndStopsWhenTold runs the driver's loop on
// pipes, as the shim gives them.
func TestDriveCopiesBothStreamsAndStopsWhenTold(t *testing.T) {
	dir := t.TempDir()
	w := newTestWriter(t, dir, DefaultMaxSize, DefaultMaxFiles, nil)
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	term := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() {
		drive(w, outR, errR, term, func() bool { return false }, time.Millisecond)
		close(done)
	}()
	io.WriteString(outW, "to stdout\n")
	io.WriteString(errW, "to stderr\n")
	outW.Close()
	errW.Close()
	// The streams ended: the driver waits for SIGTERM all the same.
	select {
	case <-done:
		t.Fatal("drive returned before SIGTERM")
	case <-time.After(50 * time.Millisecond):
	}
	term <- os.Interrupt
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("drive did not return after SIGTERM")
	}
	got, err := read(t, dir, ReadOptions{Tail: -1})
	if err != nil || !strings.Contains(got, "to stdout\n") || !strings.Contains(got, "to stderr\n") {
		t.Fatalf("log %q, %v", got, err)
	}
}

func TestDriveGivesUpOnStreamsThatDoNotEnd(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	term := make(chan os.Signal, 1)
	term <- os.Interrupt
	start := time.Now()
	drive(discard{}, r, r, term, func() bool { return false }, time.Millisecond)
	if d := time.Since(start); d < drainWait || d > drainWait+2*time.Second {
		t.Fatalf("drive returned after %s; want about drainWait (%s)", d, drainWait)
	}
}

func TestDriveStopsWhenOrphaned(t *testing.T) {
	r, w := io.Pipe()
	w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		drive(discard{}, r, r, nil, func() bool { return true }, time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("an orphaned driver with ended streams did not stop")
	}
}
