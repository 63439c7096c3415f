package containerlog

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DriverCommand is the hidden command of flotilla-agent that runs the log
// driver (DriverMain).
//
// containerd's shim starts a binary:// logger as `<path> k1 v1 k2 v2 …`
// from the URI's query, in the random order of a Go map, so the driver's
// settings travel as one value: the only key is DriverCommand, and its
// value is the query string DriverArgs encodes. The command line is then
// always `flotilla-agent log-driver <settings>`.
const DriverCommand = "log-driver"

// drainWait is how long the driver, told to stop, waits for what is still
// in the pipes: the shim kills it 12 s after SIGTERM, and holds the task's
// deletion until it is gone.
const drainWait = 2 * time.Second

// DriverArgs returns the query of the binary:// logging URI
// (cio.BinaryIO(binary, DriverArgs(cfg))) that makes the shim run the
// driver with cfg. cfg.Now is not carried.
func DriverArgs(cfg WriterConfig) map[string]string {
	q := url.Values{}
	q.Set("dir", cfg.Dir)
	q.Set("max-size", strconv.FormatInt(cfg.MaxSize, 10))
	q.Set("max-files", strconv.Itoa(cfg.MaxFiles))
	return map[string]string{DriverCommand: q.Encode()}
}

// parseDriverArgs reads the settings DriverArgs encoded.
func parseDriverArgs(args []string) (WriterConfig, error) {
	if len(args) != 1 {
		return WriterConfig{}, fmt.Errorf("want one argument (the settings), got %d", len(args))
	}
	q, err := url.ParseQuery(args[0])
	if err != nil {
		return WriterConfig{}, err
	}
	cfg := WriterConfig{Dir: q.Get("dir")}
	if cfg.MaxSize, err = strconv.ParseInt(q.Get("max-size"), 10, 64); err != nil {
		return WriterConfig{}, fmt.Errorf("max-size: %w", err)
	}
	if cfg.MaxFiles, err = strconv.Atoi(q.Get("max-files")); err != nil {
		return WriterConfig{}, fmt.Errorf("max-files: %w", err)
	}
	return cfg, cfg.Validate()
}

// DriverMain runs the log driver and returns its exit code; args are those
// after DriverCommand. The shim starts it for each task with the task's
// stdout on fd 3, its stderr on fd 4 and fd 5 to close once ready, and
// sends SIGTERM when the task is deleted (containerd's binary:// logging,
// pkg/process.NewBinaryIO).
//
// The driver is the only reader of the task's pipes: if it stopped, the
// container's writes would fail (EPIPE) or block. So whatever goes wrong,
// it keeps reading until the pipes end: settings it cannot use, or a
// directory it cannot write, make it drop the output instead.
func DriverMain(args []string) int {
	// It only copies: one thread is plenty, and each driver runs beside
	// every container of the node.
	goruntime.GOMAXPROCS(1)
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	stdout, stderr, ready := os.NewFile(3, "stdout"), os.NewFile(4, "stderr"), os.NewFile(5, "ready")

	var c copier = discard{}
	cfg, err := parseDriverArgs(args)
	if err == nil {
		var w *Writer
		if w, err = NewWriter(cfg); err == nil {
			defer w.Close()
			c = w
		}
	}
	if err != nil {
		// Nobody reads the driver's stderr (the shim gives it none); a
		// file beside the logs is where an operator looks.
		if cfg.Dir != "" {
			_ = os.WriteFile(filepath.Join(cfg.Dir, "driver-error"), []byte(err.Error()+"\n"), 0o640)
		}
	}
	if ready != nil {
		ready.Close()
	}
	parent := os.Getppid()
	drive(c, stdout, stderr, term, func() bool { return os.Getppid() != parent }, 2*time.Second)
	return 0
}

// copier is what drive copies each stream with: a Writer, or discard.
type copier interface {
	Copy(stream string, r io.Reader) error
}

type discard struct{}

func (discard) Copy(_ string, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// drive copies both streams until it is told to stop (term), then waits up
// to drainWait for what is left in them. Streams that end before that
// leave it waiting for term, as the shim expects to signal a live process:
// it does not reap the driver itself, and a driver gone early could let it
// signal a recycled pid. It also stops once orphaned (the shim died, and
// nobody will signal it), checked every poll.
func drive(c copier, stdout, stderr io.Reader, term <-chan os.Signal, orphaned func() bool, poll time.Duration) {
	var wg sync.WaitGroup
	for _, s := range []struct {
		name string
		r    io.Reader
	}{{Stdout, stdout}, {Stderr, stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A read error other than EOF ends the stream; nothing
			// better can be done with it.
			_ = c.Copy(s.name, s.r)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	drained := false
	for {
		select {
		case <-term:
			if !drained {
				select {
				case <-done:
				case <-time.After(drainWait):
				}
			}
			return
		case <-done:
			drained, done = true, nil
		case <-tick.C:
			if drained && orphaned() {
				return
			}
		}
	}
}
