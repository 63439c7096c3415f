package containerlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// clock is a settable time for writers under test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestWriter(t *testing.T, dir string, maxSize int64, maxFiles int, c *clock) *Writer {
	t.Helper()
	if c == nil {
		c = &clock{time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}
	}
	w, err := NewWriter(WriterConfig{Dir: dir, MaxSize: maxSize, MaxFiles: maxFiles, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// records parses every record of the files of run in dir, oldest first.
func records(t *testing.T, dir string, run int) []record {
	t.Helper()
	l, err := readLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for _, seq := range l.files[run] {
		b, err := os.ReadFile(path(dir, run, seq))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.SplitAfter(b, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if line[len(line)-1] != '\n' {
				t.Fatalf("%s ends in a torn record %q", fileName(run, seq), line)
			}
			r, ok := parseRecord(line[:len(line)-1])
			if !ok {
				t.Fatalf("%s: not a record: %q", fileName(run, seq), line)
			}
			out = append(out, r)
		}
	}
	return out
}

func TestWriterRotatesAtTheLimitAndKeepsMaxFiles(t *testing.T) {
	dir := t.TempDir()
	const maxSize, maxFiles = MinMaxSize, 3
	w := newTestWriter(t, dir, maxSize, maxFiles, nil)
	// 200 lines of ~100 bytes through one read each: ~26 KB of records,
	// about seven files' worth.
	var in strings.Builder
	for i := range 200 {
		fmt.Fprintf(&in, "line %03d %s\n", i, strings.Repeat("x", 60))
	}
	if err := w.Copy(Stdout, strings.NewReader(in.String())); err != nil {
		t.Fatal(err)
	}
	l, _ := readLayout(dir)
	seqs := l.files[1]
	if len(seqs) != maxFiles {
		t.Fatalf("files %v, want the last %d kept", seqs, maxFiles)
	}
	if seqs[0] == 1 {
		t.Fatalf("files %v: nothing rotated away", seqs)
	}
	for i, seq := range seqs {
		fi, err := os.Stat(path(dir, 1, seq))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxSize {
			t.Errorf("%s is %d bytes, over the limit %d", fileName(1, seq), fi.Size(), maxSize)
		}
		// Every full file was rotated only when the next record did not
		// fit: it is within one record of the limit.
		if i < len(seqs)-1 && fi.Size() < maxSize-120 {
			t.Errorf("%s rotated at %d bytes, well before the limit %d", fileName(1, seq), fi.Size(), maxSize)
		}
	}
	// What is kept is the end of the output, whole and in order.
	recs := records(t, dir, 1)
	last := 200 - len(recs)
	for i, r := range recs {
		want := fmt.Sprintf("line %03d %s", last+i, strings.Repeat("x", 60))
		if string(r.content) != want || r.partial || string(r.stream) != Stdout {
			t.Fatalf("record %d = %s %v %q, want stdout F %q", i, r.stream, r.partial, r.content, want)
		}
		if got := r.time(); !got.Equal(time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)) {
			t.Fatalf("record %d time %v", i, got)
		}
	}
}

func TestWriterPartialLines(t *testing.T) {
	long := strings.Repeat("a", MaxLineBytes) + strings.Repeat("b", MaxLineBytes) + "ccc"
	for _, tc := range []struct {
		name string
		in   string
		// want is each record as tag:content.
		want []string
	}{
		{"whole lines", "one\n\ntwo\n", []string{"F:one", "F:", "F:two"}},
		{"no newline at the end", "one\ntw", []string{"F:one", "P:tw"}},
		{"a line longer than a record", long + "\n", []string{"P:" + long[:MaxLineBytes], "P:" + long[MaxLineBytes:2*MaxLineBytes], "F:ccc"}},
		{"exactly one record long", long[:MaxLineBytes] + "\n", []string{"F:" + long[:MaxLineBytes]}},
		{"long, without a newline", long, []string{"P:" + long[:MaxLineBytes], "P:" + long[MaxLineBytes:2*MaxLineBytes], "P:ccc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, slow := range []bool{false, true} {
				dir := t.TempDir()
				w := newTestWriter(t, dir, DefaultMaxSize, DefaultMaxFiles, nil)
				r := strings.NewReader(tc.in)
				var err error
				if slow {
					// A line that arrives over many reads is still one record.
					err = w.Copy(Stderr, iotest.OneByteReader(r))
				} else {
					err = w.Copy(Stderr, r)
				}
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, r := range records(t, dir, 1) {
					tag := "F:"
					if r.partial {
						tag = "P:"
					}
					if string(r.stream) != Stderr {
						t.Errorf("stream %q", r.stream)
					}
					got = append(got, tag+string(r.content))
				}
				if strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Errorf("one byte a read %v: records\n%.200q\nwant\n%.200q", slow, got, tc.want)
				}
			}
		})
	}
}

func TestWriterRunsKeepThePreviousOne(t *testing.T) {
	dir := t.TempDir()
	for run := 1; run <= 3; run++ {
		w := newTestWriter(t, dir, DefaultMaxSize, DefaultMaxFiles, nil)
		if w.Run() != run {
			t.Fatalf("writer %d writes run %d", run, w.Run())
		}
		if err := w.Copy(Stdout, strings.NewReader(fmt.Sprintf("run %d\n", run))); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	l, _ := readLayout(dir)
	if fmt.Sprint(l.runs) != "[2 3]" {
		t.Fatalf("runs %v, want [2 3]: the current and the previous", l.runs)
	}
	if got := string(records(t, dir, 2)[0].content); got != "run 2" {
		t.Fatalf("previous run holds %q", got)
	}
}

func TestWriterDropsWhatItCannotWriteAndSaysSo(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	w := newTestWriter(t, dir, DefaultMaxSize, DefaultMaxFiles, c)
	if err := w.Copy(Stdout, strings.NewReader("before\n")); err != nil {
		t.Fatal(err)
	}
	// The file goes bad under the writer (as a full disk fails writes).
	w.mu.Lock()
	w.f.Close()
	w.mu.Unlock()
	if err := w.Copy(Stdout, strings.NewReader("lost\n")); err != nil {
		t.Fatal(err)
	}
	// Within retryWait output is dropped without touching the disk.
	if err := w.Copy(Stdout, strings.NewReader("lost too\n")); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(retryWait)
	if err := w.Copy(Stdout, strings.NewReader("after\n")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range records(t, dir, 1) {
		got = append(got, string(r.stream)+" "+string(r.content))
	}
	want := []string{
		"stdout before",
		fmt.Sprintf("stderr [flotilla: %d bytes of output were dropped: write %s: file already closed]", 2*len("2025-01-02T03:04:05.000000000Z stdout F \n")+len("lost")+len("lost too"), filepath.Join(dir, "1.1.log")),
		"stdout after",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l, _ := readLayout(dir); fmt.Sprint(l.files[1]) != "[1 2]" {
		t.Fatalf("files %v: writing resumes in a new file", l.files[1])
	}
}

func TestWriterConfigValidate(t *testing.T) {
	for _, cfg := range []WriterConfig{
		{Dir: "", MaxSize: DefaultMaxSize, MaxFiles: DefaultMaxFiles},
		{Dir: "/x", MaxSize: MinMaxSize - 1, MaxFiles: DefaultMaxFiles},
		{Dir: "/x", MaxSize: DefaultMaxSize, MaxFiles: 1},
	} {
		if cfg.Validate() == nil {
			t.Errorf("%+v passed", cfg)
		}
	}
	if err := (WriterConfig{Dir: "/x", MaxSize: DefaultMaxSize, MaxFiles: DefaultMaxFiles}).Validate(); err != nil {
		t.Error(err)
	}
}
