package containerlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Defaults of WriterConfig, the kubelet's (containerLogMaxSize,
// containerLogMaxFiles).
const (
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 5
	// MinMaxSize and MinMaxFiles are the least a writer accepts: a run
	// needs a second file to rotate into without losing all it kept.
	MinMaxSize  = 4 << 10
	MinMaxFiles = 2
)

// retryWait is how long a writer that failed to write (a full disk) drops
// output before it tries a new file, so a full disk does not cost a file
// creation per read.
const retryWait = time.Second

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Dir is the container's log directory; it is created if missing.
	Dir string
	// MaxSize bounds one file: a file is rotated before a record would take
	// it past MaxSize (a record alone can be larger: up to MaxLineBytes
	// and its prefix).
	MaxSize int64
	// MaxFiles is how many files of the run are kept, the one being
	// written included.
	MaxFiles int
	// Now stamps records; nil is time.Now.
	Now func() time.Time
}

// Validate checks the bounds.
func (c WriterConfig) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("log directory is empty"))
	}
	if c.MaxSize < MinMaxSize {
		errs = append(errs, fmt.Errorf("max size %d is below %d bytes", c.MaxSize, MinMaxSize))
	}
	if c.MaxFiles < MinMaxFiles {
		errs = append(errs, fmt.Errorf("max files %d is below %d", c.MaxFiles, MinMaxFiles))
	}
	return errors.Join(errs...)
}

// Writer writes one run of a container's output as records into rotated
// files. Copy may be called from one goroutine per stream; each read of a
// stream becomes one write(2) of whole records (or two, at a rotation), so
// readers see whole records except at the end of the file being written.
//
// It never blocks the container on a problem: a write that fails (a full
// disk) drops that output, and the next write after retryWait starts a new
// file with a record saying how much was dropped and why.
type Writer struct {
	cfg WriterConfig
	run int

	mu      sync.Mutex
	seq     int      // of the file being written; 0 before the first
	f       *os.File // nil until opened, and after a failure
	size    int64
	pruned  int // files of the run up to this sequence are removed
	retryAt time.Time
	dropped int64
	dropErr error
}

// NewWriter starts a new run in cfg.Dir: the run after the newest there.
// It removes the runs before the newest (that one stays: it is what
// `previous` reads) and opens the run's first file.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("container log writer: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	l, err := readLayout(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list log directory: %w", err)
	}
	w := &Writer{cfg: cfg, run: l.last() + 1}
	for _, run := range l.runs {
		if run >= l.last() {
			continue
		}
		for _, seq := range l.files[run] {
			_ = os.Remove(path(cfg.Dir, run, seq))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// Run is the run this writer writes.
func (w *Writer) Run() int { return w.run }

// open starts the run's next file.
func (w *Writer) open() error {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.seq++
	w.size = 0
	f, err := os.OpenFile(path(w.cfg.Dir, w.run, w.seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	w.f = f
	for ; w.pruned <= w.seq-w.cfg.MaxFiles; w.pruned++ {
		if w.pruned > 0 {
			_ = os.Remove(path(w.cfg.Dir, w.run, w.pruned))
		}
	}
	return nil
}

// Close closes the file being written.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Copy reads r until it ends and writes what it reads as records of
// stream. A line longer than MaxLineBytes becomes several records, all but
// the last partial; output that ends without a newline ends with a partial
// record, as in CRI. It returns nil at EOF, or the read error.
func (w *Writer) Copy(stream string, r io.Reader) error {
	buf := make([]byte, 64<<10)
	var (
		carry []byte // the line read so far, at most MaxLineBytes
		out   []byte // records of one read
		ends  []int  // where each record in out ends
		ts    []byte
	)
	emit := func(tag byte, content []byte) {
		out = appendRecord(out, ts, stream, tag, content)
		ends = append(ends, len(out))
	}
	// line emits a whole line, in MaxLineBytes pieces.
	line := func(l []byte) {
		for len(l) > MaxLineBytes {
			emit(tagPartial, l[:MaxLineBytes])
			l = l[MaxLineBytes:]
		}
		emit(tagFull, l)
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			// One time for what one read returned: it arrived at once.
			ts = w.cfg.Now().UTC().AppendFormat(ts[:0], timeFormat)
			out, ends = out[:0], ends[:0]
			data := buf[:n]
			for len(data) > 0 {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					carry = append(carry, data...)
					for len(carry) > MaxLineBytes {
						emit(tagPartial, carry[:MaxLineBytes])
						carry = append(carry[:0], carry[MaxLineBytes:]...)
					}
					break
				}
				if len(carry) > 0 {
					carry = append(carry, data[:i]...)
					line(carry)
					carry = carry[:0]
				} else {
					line(data[:i])
				}
				data = data[i+1:]
			}
			w.write(out, ends)
		}
		if err != nil {
			if len(carry) > 0 {
				ts = w.cfg.Now().UTC().AppendFormat(ts[:0], timeFormat)
				out, ends = out[:0], ends[:0]
				emit(tagPartial, carry)
				w.write(out, ends)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// write writes whole records (b, each ending at an offset in ends),
// rotating between two records when the next would overflow the file.
func (w *Writer) write(b []byte, ends []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	segStart, recStart := 0, 0
	var pending int64 // bytes of b[segStart:recStart]
	for _, end := range ends {
		n := int64(end - recStart)
		if w.f != nil && w.size+pending > 0 && w.size+pending+n > w.cfg.MaxSize {
			w.flush(b[segStart:recStart])
			segStart, pending = recStart, 0
			if w.f != nil {
				if err := w.open(); err != nil {
					w.fail(err)
				}
			}
		}
		pending += n
		recStart = end
	}
	w.flush(b[segStart:recStart])
}

// flush writes seg to the current file, opening one after a failure once
// retryWait has passed; what cannot be written is counted as dropped.
func (w *Writer) flush(seg []byte) {
	if len(seg) == 0 {
		return
	}
	if w.f == nil {
		if w.cfg.Now().Before(w.retryAt) {
			w.dropped += int64(len(seg))
			return
		}
		if err := w.open(); err != nil {
			w.fail(err)
			w.dropped += int64(len(seg))
			return
		}
	}
	if w.dropped > 0 {
		msg := fmt.Sprintf("[flotilla: %d bytes of output were dropped: %v]", w.dropped, w.dropErr)
		ts := w.cfg.Now().UTC().AppendFormat(nil, timeFormat)
		rec := appendRecord(nil, ts, Stderr, tagFull, []byte(msg))
		if n, err := w.f.Write(rec); err != nil {
			w.size += int64(n)
			w.fail(err)
			w.dropped += int64(len(seg))
			return
		}
		w.size += int64(len(rec))
		w.dropped, w.dropErr = 0, nil
	}
	n, err := w.f.Write(seg)
	w.size += int64(n)
	if err != nil {
		w.dropped += int64(len(seg) - n)
		w.fail(err)
	}
}

// fail closes the file after a failed write or open: it may end in a torn
// record, so writing resumes in a new file after retryWait.
func (w *Writer) fail(err error) {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
	w.dropErr = err
	w.retryAt = w.cfg.Now().Add(retryWait)
}
