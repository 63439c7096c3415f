package containerlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"
)

// ErrNotFound means the container has no log directory: it never ran on
// this node, or its pod was removed.
var ErrNotFound = errors.New("no logs for this container on this node")

// ErrNoPrevious means there is no run before the current one: the
// container has not restarted.
var ErrNoPrevious = errors.New("the container has no previous run: it has not restarted")

// defaultPoll is how often a follower that caught up looks for more.
const defaultPoll = 200 * time.Millisecond

// ReadOptions selects what Read writes.
type ReadOptions struct {
	// Previous reads the run before the current one instead of the
	// current one. It never follows.
	Previous bool
	// Tail, when >= 0, starts that many lines before the end of the run;
	// < 0 starts at its beginning.
	Tail int
	// Since leaves out records written before it; zero leaves none out.
	Since time.Time
	// Follow keeps reading as the container writes, into its next files
	// and its next runs (restarts), until ctx ends or the directory is
	// removed.
	Follow bool
	// Timestamps starts each line with the time it was written (RFC 3339).
	Timestamps bool
	// Poll is how often a follower that caught up looks for more output;
	// 0 is 200 ms.
	Poll time.Duration
}

// flusher is http.Flusher: Read flushes w whenever it has caught up, so a
// follower sees each line as it comes.
type flusher interface{ Flush() }

// position is where a reader is: a file of a run, and an offset in it.
type position struct {
	run, seq int
	off      int64
}

// Read writes the logs in dir to w as plain lines (the content of each
// record; partial records joined), selected by opts. It returns
// ErrNotFound when dir does not exist, ErrNoPrevious when opts.Previous
// asks for a run that is not there, nil when it reached the end (or, when
// following, when ctx ended or dir was removed), or the error writing w.
func Read(ctx context.Context, dir string, opts ReadOptions, w io.Writer) error {
	if opts.Poll <= 0 {
		opts.Poll = defaultPoll
	}
	l, err := readLayout(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	rd := &reader{ctx: ctx, dir: dir, opts: opts, out: newOutput(w, opts.Timestamps)}
	run := l.last()
	if opts.Previous {
		if len(l.runs) < 2 {
			return ErrNoPrevious
		}
		run = l.runs[len(l.runs)-2]
		rd.opts.Follow = false
	}
	var pos position
	switch {
	case run == 0:
		// Created, not started yet: a follower waits for the first run,
		// and says so (a flush sends an HTTP answer's headers).
		if !opts.Follow {
			return rd.out.flush()
		}
		if err := rd.out.flush(); err != nil {
			return err
		}
		if l, ok := rd.await(func(l layout) bool { return l.last() > 0 }); ok {
			pos = position{run: l.last(), seq: l.files[l.last()][0]}
		} else {
			return rd.out.flush()
		}
	case opts.Tail >= 0:
		pos = tailStart(dir, run, l.files[run], opts.Tail)
	default:
		pos = position{run: run, seq: l.files[run][0]}
	}
	err = rd.from(pos)
	if ferr := rd.out.flush(); err == nil {
		err = ferr
	}
	return err
}

type reader struct {
	ctx  context.Context
	dir  string
	opts ReadOptions
	out  *output
}

// from reads from pos to the end of its run, and on into later runs when
// following.
func (rd *reader) from(pos position) error {
	for {
		f, err := os.Open(path(rd.dir, pos.run, pos.seq))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			// Removed since it was listed: it fell out of the files a
			// run keeps (a slow reader), or the pod went.
			l, err := readLayout(rd.dir)
			if err != nil {
				return nil
			}
			next, ok := rd.next(l, pos)
			if !ok {
				return nil
			}
			pos = next
			continue
		}
		next, ok, err := rd.file(f, pos)
		f.Close()
		if err != nil || !ok {
			return err
		}
		pos = next
	}
}

// next is the file after pos's: the run's next file, or when following
// the first file of the next run.
func (rd *reader) next(l layout, pos position) (position, bool) {
	if seq := l.nextFile(pos.run, pos.seq); seq > 0 {
		return position{run: pos.run, seq: seq}, true
	}
	if rd.opts.Follow {
		if run := l.after(pos.run); run > 0 {
			return position{run: run, seq: l.files[run][0]}, true
		}
	}
	return position{}, false
}

// file reads f from pos.off. At its end it returns the next file to read,
// or false when there is none (not following) or the reader should stop.
// A writer never goes back to a file once it has created the next one, so
// a file with a successor is read to its end once more before moving on.
func (rd *reader) file(f *os.File, pos position) (position, bool, error) {
	if pos.off > 0 {
		if _, err := f.Seek(pos.off, io.SeekStart); err != nil {
			return position{}, false, err
		}
	}
	br := bufio.NewReaderSize(f, 2*MaxLineBytes)
	var (
		pend []byte // a record read up to the end of the file so far
		skip bool   // inside a line too long to be a record
	)
	drain := func() error {
		for {
			line, err := br.ReadSlice('\n')
			switch {
			case err == nil:
				if len(pend) > 0 {
					line = append(pend, line...)
					pend = pend[:0]
				}
				if skip {
					skip = false
					continue
				}
				if err := rd.emit(line[:len(line)-1]); err != nil {
					return err
				}
			case errors.Is(err, bufio.ErrBufferFull):
				// Not a record (no record is this long): a torn
				// write's remains. Skip to the next newline.
				skip, pend = true, pend[:0]
			case errors.Is(err, io.EOF):
				if !skip {
					pend = append(pend, line...)
				}
				if len(pend) > 2*MaxLineBytes {
					skip, pend = true, pend[:0]
				}
				return nil
			default:
				return err
			}
		}
	}
	for {
		if err := drain(); err != nil {
			return position{}, false, err
		}
		l, err := readLayout(rd.dir)
		if err != nil {
			return position{}, false, nil // removed: the pod is gone
		}
		if next, ok := rd.next(l, pos); ok {
			if err := drain(); err != nil {
				return position{}, false, err
			}
			return next, true, nil
		}
		if !rd.opts.Follow {
			return position{}, false, nil
		}
		if err := rd.out.flush(); err != nil {
			return position{}, false, err
		}
		if !rd.sleep() {
			return position{}, false, nil
		}
	}
}

// await polls the directory until ready says yes (true), or ctx ends or
// the directory goes (false).
func (rd *reader) await(ready func(layout) bool) (layout, bool) {
	for {
		l, err := readLayout(rd.dir)
		if err != nil {
			return layout{}, false
		}
		if ready(l) {
			return l, true
		}
		if !rd.sleep() {
			return layout{}, false
		}
	}
}

func (rd *reader) sleep() bool {
	t := time.NewTimer(rd.opts.Poll)
	defer t.Stop()
	select {
	case <-rd.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// emit writes one record, unless it is older than Since.
func (rd *reader) emit(line []byte) error {
	r, ok := parseRecord(line)
	if !ok {
		return nil
	}
	if !rd.opts.Since.IsZero() && r.time().Before(rd.opts.Since) {
		return nil
	}
	return rd.out.record(r)
}

// output writes records as lines, buffered.
type output struct {
	w          io.Writer
	bw         *bufio.Writer
	timestamps bool
	midLine    bool // the last record written was partial
}

func newOutput(w io.Writer, timestamps bool) *output {
	return &output{w: w, bw: bufio.NewWriterSize(w, 32<<10), timestamps: timestamps}
}

func (o *output) record(r record) error {
	if o.timestamps && !o.midLine {
		o.bw.Write(r.ts)
		o.bw.WriteByte(' ')
	}
	o.bw.Write(r.content)
	o.midLine = r.partial
	if !r.partial {
		o.bw.WriteByte('\n')
	}
	// bufio.Writer keeps its first error and returns it from every call.
	_, err := o.bw.Write(nil)
	return err
}

func (o *output) flush() error {
	if err := o.bw.Flush(); err != nil {
		return err
	}
	if f, ok := o.w.(flusher); ok {
		f.Flush()
	}
	return nil
}

// tailStart returns where the last n lines of a run (files seqs) begin. A
// line is a run of partial records and the full one that ends it; partial
// records at the very end count as a line. Output being written (after the
// last newline) is not counted: the reader gets to it.
func tailStart(dir string, run int, seqs []int, n int) position {
	if n == 0 {
		// Only what comes next: after the newest file's last record.
		pos := position{run: run, seq: seqs[len(seqs)-1]}
		_ = scanFile(path(dir, run, pos.seq), func(rec []byte, off int64) bool {
			pos.off = off + int64(len(rec)) + 1
			return false
		})
		return pos
	}
	count, seen := 0, false
	for i := len(seqs) - 1; i >= 0; i-- {
		var found *position
		err := scanFile(path(dir, run, seqs[i]), func(rec []byte, off int64) bool {
			if r, ok := parseRecord(rec); (!ok || !r.partial) && seen {
				// A line ends with this record, and records after it
				// make one more line from the end.
				if count++; count == n {
					found = &position{run: run, seq: seqs[i], off: off + int64(len(rec)) + 1}
					return false
				}
			}
			seen = true
			return true
		})
		if found != nil {
			return *found
		}
		if err != nil && i+1 < len(seqs) {
			// Unreadable or gone (rotated away): the tail starts after it.
			return position{run: run, seq: seqs[i+1]}
		}
	}
	return position{run: run, seq: seqs[0]}
}

// scanFile calls fn with each whole record of the file at path (without
// its newline) and the offset it starts at, last first, until fn returns
// false. Bytes after the last newline (a record being written) are left
// out, as is a line too long to be a record.
func scanFile(path string, fn func(rec []byte, off int64) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	const block = 64 << 10 // more than a record: each block holds a newline
	buf := make([]byte, block)
	end := fi.Size() // [end, size) is done, or not a whole record
	trim := true     // drop what follows the last newline before end
	for end > 0 {
		start := max(0, end-block)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if trim {
			i := bytes.LastIndexByte(b, '\n')
			if i < 0 {
				end = start
				continue
			}
			b, trim = b[:i+1], false
		}
		// b ends with the newline of the record at j.
		j := len(b) - 1
		for {
			k := bytes.LastIndexByte(b[:j], '\n')
			if k < 0 && start > 0 {
				break // begins in the block before
			}
			if !fn(b[k+1:j], start+int64(k+1)) {
				return nil
			}
			if k < 0 {
				return nil
			}
			j = k
		}
		if next := start + int64(j) + 1; next < start+int64(len(b)) {
			end = next
		} else {
			// No newline before this record in a whole block: it is too
			// long to be a record. Skip it, up to the newline before.
			end, trim = start, true
		}
	}
	return nil
}

// LastLines returns the last n lines of the current run in dir, blank ones
// left out and each cut to maxLen bytes: what a pod's status shows of a
// container that exited. It returns nil when there are none.
func LastLines(dir string, n, maxLen int) []string {
	c := &lineCollector{maxLen: maxLen}
	if err := Read(context.Background(), dir, ReadOptions{Tail: n}, c); err != nil {
		return nil
	}
	c.end()
	return c.lines
}

// lineCollector keeps the lines written to it, each cut to maxLen bytes.
type lineCollector struct {
	maxLen int
	cur    []byte
	open   bool // cur holds a line begun
	lines  []string
}

func (c *lineCollector) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := c.maxLen - len(c.cur); room > 0 {
			c.cur = append(c.cur, chunk[:min(room, len(chunk))]...)
		}
		c.open = true
		if i < 0 {
			break
		}
		c.end()
		p = p[i+1:]
	}
	return n, nil
}

func (c *lineCollector) end() {
	if s := string(bytes.TrimRight(c.cur, "\r")); c.open && len(bytes.TrimSpace(c.cur)) > 0 {
		c.lines = append(c.lines, s)
	}
	c.cur, c.open = c.cur[:0], false
}
