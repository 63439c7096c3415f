package svcproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
)

// Applier loads and reads iptables rules. Syncer calls it from one
// goroutine at a time. The rules land in the network namespace the
// implementation runs its commands in (ExecApplier: the calling thread's).
type Applier interface {
	// Restore loads input as `iptables-restore --noflush` does: chains it
	// declares are flushed and refilled, nothing else is touched, and each
	// table's part commits atomically or not at all.
	Restore(ctx context.Context, input []byte) error
	// Save returns `iptables-save -t table`.
	Save(ctx context.Context, table string) ([]byte, error)
}

var (
	_ Applier = (*ExecApplier)(nil)
	_ Applier = (*FakeApplier)(nil)
)

// ExecConfig configures an ExecApplier.
type ExecConfig struct {
	// RestorePath and SavePath are the iptables-restore and iptables-save
	// binaries, looked up in PATH when not absolute. Both must use the same
	// backend (nf_tables or legacy) as everything else on the host.
	RestorePath, SavePath string
	// NetNSPath, when set, is the network namespace the commands run in
	// (e.g. /run/netns/NAME); empty runs them in the calling thread's.
	NetNSPath string
}

// DefaultExecConfig uses the iptables-restore and iptables-save in PATH.
func DefaultExecConfig() ExecConfig {
	return ExecConfig{RestorePath: "iptables-restore", SavePath: "iptables-save"}
}

// ExecApplier runs iptables-restore and iptables-save, in
// ExecConfig.NetNSPath or else the network namespace of the calling thread.
type ExecApplier struct {
	cfg ExecConfig
}

// NewExecApplier returns an ExecApplier; empty paths take the defaults.
func NewExecApplier(cfg ExecConfig) *ExecApplier {
	d := DefaultExecConfig()
	if cfg.RestorePath == "" {
		cfg.RestorePath = d.RestorePath
	}
	if cfg.SavePath == "" {
		cfg.SavePath = d.SavePath
	}
	return &ExecApplier{cfg: cfg}
}

// failedLineRE finds the line iptables-restore names in its error.
var failedLineRE = regexp.MustCompile(`line (\d+) failed`)

// Restore implements Applier with `iptables-restore --noflush -w`.
func (a *ExecApplier) Restore(ctx context.Context, input []byte) error {
	cmd := exec.CommandContext(ctx, a.cfg.RestorePath, "--noflush", "-w")
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := a.run(cmd.Run); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if m := failedLineRE.FindStringSubmatch(msg); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 0 {
				if lines := bytes.Split(input, []byte("\n")); n <= len(lines) {
					msg += fmt.Sprintf(" (line %d: %q)", n, lines[n-1])
				}
			}
		}
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("run %s: %w; install iptables or set the restore path", a.cfg.RestorePath, err)
		}
		return fmt.Errorf("%s --noflush: %w: %s", a.cfg.RestorePath, err, msg)
	}
	return nil
}

// Save implements Applier.
func (a *ExecApplier) Save(ctx context.Context, table string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, a.cfg.SavePath, "-t", table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var out []byte
	err := a.run(func() (err error) { out, err = cmd.Output(); return err })
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("run %s: %w; install iptables or set the save path", a.cfg.SavePath, err)
		}
		return nil, fmt.Errorf("%s -t %s: %w: %s", a.cfg.SavePath, table, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// run calls fn, which starts a command, inside NetNSPath when set: on a
// thread of its own that enters the namespace and is never handed back to
// the runtime (LockOSThread without unlock ends the thread with the
// goroutine), so no other goroutine ever runs in that namespace by mistake.
// The child process inherits the thread's namespace.
func (a *ExecApplier) run(fn func() error) error {
	if a.cfg.NetNSPath == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		h, err := netns.GetFromPath(a.cfg.NetNSPath)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", a.cfg.NetNSPath, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", a.cfg.NetNSPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
