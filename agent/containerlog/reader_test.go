package containerlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeRun writes one run of lines to dir, one second a line from start;
// a line starting "err:" goes to stderr.
func writeRun(t *testing.T, dir string, maxSize int64, start time.Time, lines ...string) {
	t.Helper()
	c := &clock{start}
	w := newTestWriter(t, dir, maxSize, 100, c)
	for _, l := range lines {
		stream := Stdout
		if rest, ok := strings.CutPrefix(l, "err:"); ok {
			stream, l = Stderr, rest
		}
		if err := w.Copy(stream, strings.NewReader(l)); err != nil {
			t.Fatal(err)
		}
		c.t = c.t.Add(time.Second)
	}
	w.Close()
}

func read(t *testing.T, dir string, opts ReadOptions) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := Read(context.Background(), dir, opts, &b)
	return b.String(), err
}

func numbered(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("line %03d %s\n", i, strings.Repeat("y", 50)))
	}
	return out
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestReadTailSincePrevious(t *testing.T) {
	dir := t.TempDir()
	// Run 1: 3 lines. Run 2: 150 lines over several files (MinMaxSize),
	// then a line longer than a record, then output without a newline.
	writeRun(t, dir, MinMaxSize, t0, "first run 1\n", "first run 2\n", "err:first run 3\n")
	long := strings.Repeat("z", MaxLineBytes+10)
	run2 := append(numbered(1, 150), long+"\n", "no newline")
	writeRun(t, dir, MinMaxSize, t0.Add(time.Hour), run2...)
	if l, _ := readLayout(dir); len(l.files[2]) < 3 {
		t.Fatalf("run 2 has files %v; the test wants several", l.files[2])
	}
	all := strings.Join(run2, "")
	for _, tc := range []struct {
		name string
		opts ReadOptions
		want string
		err  error
	}{
		{"all of the current run", ReadOptions{Tail: -1}, all, nil},
		{"tail 1 is the unfinished line", ReadOptions{Tail: 1}, "no newline", nil},
		{"tail 2 takes a line of two records whole", ReadOptions{Tail: 2}, long + "\nno newline", nil},
		{"tail across files", ReadOptions{Tail: 52}, strings.Join(run2[len(run2)-52:], ""), nil},
		{"tail beyond the start", ReadOptions{Tail: 10000}, all, nil},
		{"tail 0", ReadOptions{Tail: 0}, "", nil},
		{"since", ReadOptions{Tail: -1, Since: t0.Add(time.Hour + 148*time.Second)}, strings.Join(run2[148:], ""), nil},
		{"since and tail", ReadOptions{Tail: 1, Since: t0.Add(time.Hour + 148*time.Second)}, "no newline", nil},
		{"previous", ReadOptions{Tail: -1, Previous: true}, "first run 1\nfirst run 2\nfirst run 3\n", nil},
		{"previous, tail", ReadOptions{Tail: 1, Previous: true}, "first run 3\n", nil},
		{"previous with timestamps", ReadOptions{Tail: 2, Previous: true, Timestamps: true},
			"2025-03-01T12:00:01.000000000Z first run 2\n2025-03-01T12:00:02.000000000Z first run 3\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(t, dir, tc.opts)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("got %d bytes %.300q…\nwant %d bytes %.300q…", len(got), got, len(tc.want), tc.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	if _, err := read(t, t.TempDir()+"/missing", ReadOptions{Tail: -1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing directory: %v, want ErrNotFound", err)
	}
	dir := t.TempDir()
	if got, err := read(t, dir, ReadOptions{Tail: -1}); err != nil || got != "" {
		t.Errorf("empty directory: %q, %v; want nothing", got, err)
	}
	writeRun(t, dir, DefaultMaxSize, t0, "only run\n")
	if _, err := read(t, dir, ReadOptions{Tail: -1, Previous: true}); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("previous of the first run: %v, want ErrNoPrevious", err)
	}
}

func TestReadSkipsTornRecords(t *testing.T) {
	dir := t.TempDir()
	ts := "2025-03-01T12:00:00.000000000Z"
	// A file left torn by a failed write: a record cut short and glued to
	// the next, garbage longer than any record, and an unfinished record
	// at the end of a file that was rotated away from.
	content := ts + " stdout F one\n" +
		ts + " stdout F tw" + ts + " stdout F three\n" +
		strings.Repeat("g", 3*MaxLineBytes) + "\n" +
		"junk\n" +
		ts + " stdout F four\n" +
		ts + " stdout F fi"
	if err := os.WriteFile(path(dir, 1, 1), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path(dir, 1, 2), []byte(ts+" stdout F six\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := read(t, dir, ReadOptions{Tail: -1})
	// The glued line parses as a record with odd content; that is what
	// the file says. Garbage and junk are dropped, as is the torn end.
	want := "one\ntw" + ts + " stdout F three\nfour\nsix\n"
	if err != nil || got != want {
		t.Fatalf("got %q, %v\nwant %q", got, err, want)
	}
	if got, _ := read(t, dir, ReadOptions{Tail: 2}); got != "four\nsix\n" {
		t.Fatalf("tail 2 = %q", got)
	}
}

// syncBuffer is a bytes.Buffer safe for a reader and a writer, that counts
// flushes.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	flushes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReadFollowsAcrossRotationAndRestarts(t *testing.T) {
	dir := t.TempDir()
	writeRun(t, dir, MinMaxSize, t0, "old run\n")
	c := &clock{t0}
	w := newTestWriter(t, dir, MinMaxSize, 3, c)
	if err := w.Copy(Stdout, strings.NewReader("before follow\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Read(ctx, dir, ReadOptions{Tail: 1, Follow: true, Poll: 5 * time.Millisecond}, out) }()
	waitFor(t, "the tail", func() bool { return out.String() == "before follow\n" })

	// Enough output, one line at a time, to rotate through more files
	// than the run keeps; the follower keeps up, so it misses none.
	want := "before follow\n"
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() { copied <- w.Copy(Stdout, pr) }()
	for _, l := range numbered(1, 300) {
		want += l
		if _, err := io.WriteString(pw, l); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(l[:8], "0") {
			waitFor(t, "line "+l[:8], func() bool { return strings.HasSuffix(out.String(), l) })
		}
	}
	// A line written in two pieces shows once whole.
	io.WriteString(pw, "half a li")
	time.Sleep(20 * time.Millisecond)
	io.WriteString(pw, "ne\n")
	want += "half a line\n"
	pw.Close()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	w.Close()
	waitFor(t, "every line", func() bool { return out.String() == want })
	if l, _ := readLayout(dir); l.files[2][0] == 1 {
		t.Fatalf("files %v: the run did not rotate away its first files", l.files[2])
	}

	// A restart: the follower goes on into the new run.
	writeRun(t, dir, MinMaxSize, t0, "next run\n")
	want += "next run\n"
	waitFor(t, "the next run", func() bool { return out.String() == want })
	if out.flushes == 0 {
		t.Error("the follower never flushed")
	}

	// It ends when the client goes away.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Read = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after its context ended")
	}
}

func TestReadFollowEndsWhenThePodGoes(t *testing.T) {
	dir := t.TempDir() + "/c"
	writeRun(t, dir, MinMaxSize, t0, "line\n")
	done := make(chan error, 1)
	out := &syncBuffer{}
	go func() {
		done <- Read(context.Background(), dir, ReadOptions{Tail: -1, Follow: true, Poll: 5 * time.Millisecond}, out)
	}()
	waitFor(t, "the line", func() bool { return out.String() == "line\n" })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Read = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after the directory went")
	}
}

func TestReadFollowWaitsForTheFirstRun(t *testing.T) {
	dir := t.TempDir()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Read(ctx, dir, ReadOptions{Tail: 10, Follow: true, Poll: 5 * time.Millisecond}, out) }()
	writeRun(t, dir, MinMaxSize, t0, "hello\n")
	waitFor(t, "the first line", func() bool { return out.String() == "hello\n" })
	cancel()
	<-done
}

func TestLastLines(t *testing.T) {
	dir := t.TempDir()
	if got := LastLines(dir, 3, 10); got != nil {
		t.Errorf("no logs: %q", got)
	}
	writeRun(t, dir, DefaultMaxSize, t0, "one\n", "two\n", "\n", "three is long\r\n", "four\n")
	if got := strings.Join(LastLines(dir, 4, 10), "|"); got != "two|three is l|four" {
		t.Errorf("LastLines = %q", got)
	}
}
