package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flotilla-io/flotilla/api"
)

// exitCodeError ends the CLI with a command's own exit code, as `kubectl
// exec` and `nomad alloc exec` do, without an error line.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("command exited with code %d", e.code) }

func newExecCmd(c *cli) *cobra.Command {
	var namespace string
	var opts api.ExecOptions
	cmd := &cobra.Command{
		Use:   "exec [-it] POD [-c CONTAINER] -- COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Runs a command in a running container of a pod, on whichever node runs it, with the
container's own user, environment, capabilities and seccomp profile. flotilla exits
with the command's exit code.

  flotilla exec -it web-7d9f2 -- sh
  flotilla exec web-7d9f2 -c app -- cat /etc/resolv.conf`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("give the pod, then -- and the command: flotilla exec POD -- COMMAND [ARG...]")
			}
			opts.Command = args[1:]
			if err := opts.Validate(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var stdin io.Reader
			if opts.Stdin {
				stdin = c.stdin
			}
			resize := make(chan api.TermSize, 1)
			if opts.TTY {
				restore, stop, err := c.rawTerminal(resize)
				if err != nil {
					return err
				}
				defer restore()
				defer stop()
			}
			// The session lasts until the command ends or the user
			// interrupts; only starting it is bounded (by the client).
			code, err := cl.Exec(cmd.Context(), namespace, args[0], opts, stdin, c.stdout, c.stderr, resize)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	fl.StringVarP(&opts.Container, "container", "c", "", "container (may be left out for a pod with one)")
	fl.BoolVarP(&opts.Stdin, "stdin", "i", false, "pass standard input to the command")
	fl.BoolVarP(&opts.TTY, "tty", "t", false, "give the command a terminal (this one, in raw mode, resized with it)")
	return cmd
}

// rawTerminal puts the CLI's terminal in raw mode, sends its size now and
// whenever it changes (SIGWINCH) on resize, and returns how to restore it
// and to stop watching. Without a terminal on stdin there is no size to
// send and nothing to restore.
func (c *cli) rawTerminal(resize chan<- api.TermSize) (restore, stop func(), err error) {
	f, ok := c.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}, func() {}, nil
	}
	fd := int(f.Fd())
	send := func() {
		if w, h, err := term.GetSize(fd); err == nil && w > 0 && h > 0 {
			select {
			case resize <- api.TermSize{Width: uint16(w), Height: uint16(h)}:
			default: // the session has not read the last one yet
			}
		}
	}
	send()
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				send()
			case <-done:
				return
			}
		}
	}()
	return func() { _ = term.Restore(fd, old) }, func() { signal.Stop(winch); close(done) }, nil
}
