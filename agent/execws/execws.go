// Package execws serves `exec` sessions over WebSockets in the framed
// protocol api.ExecProtocol describes: it starts a command (through a
// Starter, the node's runtime) with pipes for its streams, upgrades the
// request once the command runs, pumps frames between the WebSocket and
// the pipes, and ends with the exit code. Relay carries a session between
// two WebSockets, for a server that forwards an exec to the pod's node.
//
// It checks no identity: the API (token) and the agents' RPC (server
// certificates) decide who reaches it.
package execws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// StallTimeout cuts off a peer that takes no frame for this long, so one
// that stopped reading cannot hold a session (and the command's output)
// forever.
const StallTimeout = 2 * time.Minute

// ErrBusy is wrapped by a Starter's error when its node runs as many execs
// as it allows.
var ErrBusy = errors.New("too many execs on this node")

// Starter starts an exec with the given streams: node.Exec.StartExec.
type Starter func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error)

// ErrorStatus is the HTTP status that answers a Starter's error: 404 no
// such container, 409 not running, 429 busy, 400 a command that could not
// start (or another bad request), 500 otherwise.
func ErrorStatus(err error) int {
	var se interface{ HTTPStatus() int }
	switch {
	case errors.Is(err, runtime.ErrContainerNotFound):
		return http.StatusNotFound
	case errors.Is(err, runtime.ErrNotRunning):
		return http.StatusConflict
	case errors.Is(err, ErrBusy):
		return http.StatusTooManyRequests
	case errors.Is(err, runtime.ErrExecStart):
		return http.StatusBadRequest
	case errors.As(err, &se):
		return se.HTTPStatus()
	}
	return http.StatusInternalServerError
}

// WriteError answers a request that is not upgraded with an
// api.ErrorResponse.
func WriteError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: msg})
}

// Accept upgrades r to a WebSocket speaking api.ExecProtocol, lifting the
// HTTP server's read and write timeouts, which a hijacked connection
// otherwise keeps. A client that does not offer the protocol is refused
// (426) before the upgrade.
func Accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	if !offers(r, api.ExecProtocol) {
		WriteError(w, http.StatusUpgradeRequired, fmt.Sprintf("exec needs a WebSocket upgrade offering the subprotocol %q (Sec-WebSocket-Protocol); api.Client.Exec does this", api.ExecProtocol))
		return nil, errors.New("the client does not speak " + api.ExecProtocol)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{api.ExecProtocol},
		// The API authenticates with a bearer token, which a browser
		// never adds to another site's WebSocket: no origin to check.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 + api.MaxExecFrame)
	return conn, nil
}

// offers reports whether the handshake offers subprotocol p.
func offers(r *http.Request, p string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, s := range splitComma(v) {
			if s == p {
				return true
			}
		}
	}
	return false
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			part := s[start:i]
			for len(part) > 0 && (part[0] == ' ' || part[0] == '\t') {
				part = part[1:]
			}
			for len(part) > 0 && (part[len(part)-1] == ' ' || part[len(part)-1] == '\t') {
				part = part[:len(part)-1]
			}
			if part != "" {
				out = append(out, part)
			}
			start = i + 1
		}
	}
	return out
}

// ServeHTTP runs an exec for r: it starts the command with start, answers
// a refusal with its HTTP status, else upgrades r and serves the session
// until the command exits or the client goes away (then the command is
// killed). Ending ctx ends the session too.
func ServeHTTP(ctx context.Context, w http.ResponseWriter, r *http.Request, opts api.ExecOptions, start Starter, log *slog.Logger) {
	if !offers(r, api.ExecProtocol) {
		_, _ = Accept(w, r) // answers 426
		return
	}
	s := newSession(opts)
	proc, err := start(ctx, opts, s.io())
	if err != nil {
		s.abort()
		WriteError(w, ErrorStatus(err), err.Error())
		return
	}
	conn, err := Accept(w, r)
	if err != nil {
		log.Debug("exec: WebSocket upgrade failed; killing the command", "err", err)
		s.abort()
		kctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _ = proc.Wait(kctx)
		return
	}
	res := s.serve(ctx, conn, proc, log)
	log.Debug("exec ended", "command", opts.Command[0], "exit_code", res.ExitCode, "error", res.Error)
}

// session holds the pipes between a WebSocket and a command.
type session struct {
	opts             api.ExecOptions
	stdinR           *io.PipeReader
	stdinW           *io.PipeWriter
	stdoutR, stderrR *io.PipeReader
	stdoutW, stderrW *io.PipeWriter
}

func newSession(opts api.ExecOptions) *session {
	s := &session{opts: opts}
	s.stdinR, s.stdinW = io.Pipe()
	s.stdoutR, s.stdoutW = io.Pipe()
	s.stderrR, s.stderrW = io.Pipe()
	return s
}

// io is what the command is started with.
func (s *session) io() runtime.ExecIO {
	e := runtime.ExecIO{Stdout: s.stdoutW}
	if !s.opts.TTY {
		e.Stderr = s.stderrW
	}
	if s.opts.Stdin {
		e.Stdin = s.stdinR
	}
	return e
}

// abort releases the pipes of a session that is not served.
func (s *session) abort() {
	s.stdinR.CloseWithError(errEnded)
	s.stdoutR.CloseWithError(errEnded)
	s.stderrR.CloseWithError(errEnded)
}

var errEnded = errors.New("exec session ended")

// serve pumps frames until the command exits, sends its status and closes
// conn. A client that goes away, or breaks the protocol, gets the command
// killed.
func (s *session) serve(ctx context.Context, conn *websocket.Conn, proc runtime.ExecProcess, log *slog.Logger) api.ExecResult {
	defer conn.CloseNow()
	waitCtx, kill := context.WithCancel(ctx)
	defer kill()

	var out sync.WaitGroup
	pump := func(stream byte, r *io.PipeReader) {
		defer out.Done()
		buf := make([]byte, api.MaxExecFrame+1)
		for {
			n, err := r.Read(buf[1:])
			if n > 0 {
				buf[0] = stream
				wctx, cancel := context.WithTimeout(ctx, StallTimeout)
				werr := conn.Write(wctx, websocket.MessageBinary, buf[:1+n])
				cancel()
				if werr != nil {
					// The client is gone or stalled: end the command, and
					// read on so it is never blocked on its output.
					kill()
					r.CloseWithError(errEnded)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	out.Add(1)
	go pump(api.ExecStdout, s.stdoutR)
	if !s.opts.TTY {
		out.Add(1)
		go pump(api.ExecStderr, s.stderrR)
	}

	var protoErr error
	var protoMu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		// The client went away: end the command, once readDone tells
		// serve there is nobody to send its status to.
		defer kill()
		defer close(readDone)
		if err := s.readClient(ctx, conn, proc, log); err != nil {
			protoMu.Lock()
			protoErr = err
			protoMu.Unlock()
		}
	}()

	code, werr := proc.Wait(waitCtx)
	// Wait returned once the output was copied into the pipes: close
	// them so the pumps send the rest and end.
	s.stdoutW.Close()
	s.stderrW.Close()
	out.Wait()
	s.stdinR.CloseWithError(errEnded)

	res := api.ExecResult{ExitCode: code}
	protoMu.Lock()
	switch {
	case protoErr != nil:
		res = api.ExecResult{ExitCode: -1, Error: protoErr.Error()}
	case werr != nil:
		res = api.ExecResult{ExitCode: -1, Error: werr.Error()}
	}
	protoMu.Unlock()
	select {
	case <-readDone:
		// The client went away (or broke the protocol): nobody to tell
		// but a protocol breaker, which gets a close reason.
		if res.Error != "" {
			_ = conn.Close(websocket.StatusPolicyViolation, api.TruncateText(res.Error, 120))
		}
		return res
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, StallTimeout)
	defer cancel()
	if err := conn.Write(wctx, websocket.MessageBinary, api.ExecStatusFrame(res)); err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	return res
}

// readClient handles the client's frames until it goes away; it returns an
// error for a frame that breaks the protocol.
func (s *session) readClient(ctx context.Context, conn *websocket.Conn, proc runtime.ExecProcess, log *slog.Logger) error {
	stdinOpen := s.opts.Stdin
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			return nil
		}
		if typ != websocket.MessageBinary || len(msg) == 0 {
			return fmt.Errorf("protocol: exec messages are binary and start with a stream byte (%s)", api.ExecProtocol)
		}
		data := msg[1:]
		switch msg[0] {
		case api.ExecStdin:
			if !s.opts.Stdin {
				return errors.New("protocol: stdin data, but the exec was started without stdin=true")
			}
			if stdinOpen && len(data) > 0 {
				// Blocks while the command does not read its stdin.
				if _, err := s.stdinW.Write(data); err != nil {
					stdinOpen = false
				}
			}
		case api.ExecResize:
			size, err := api.ParseTermSize(data)
			if err != nil {
				return fmt.Errorf("protocol: %w", err)
			}
			if s.opts.TTY {
				if err := proc.Resize(ctx, size.Width, size.Height); err != nil {
					log.Debug("exec: resize failed", "err", err)
				}
			}
		case api.ExecClose:
			if len(data) != 1 || data[0] != api.ExecStdin {
				return errors.New("protocol: only stdin can be closed ([255, 0])")
			}
			if stdinOpen {
				stdinOpen = false
				s.stdinW.Close()
			}
		default:
			return fmt.Errorf("protocol: stream %d is not one a client sends (0 stdin, 4 resize, 255 close)", msg[0])
		}
	}
}

// Relay carries an exec session between the client's WebSocket and the
// one to the pod's node, frame by frame, until either side closes; the
// other is then closed with the same status. Frames are not inspected:
// the node checks them.
func Relay(ctx context.Context, client, node *websocket.Conn) {
	client.SetReadLimit(1 + api.MaxExecFrame)
	node.SetReadLimit(1 + api.MaxExecFrame + 1024) // the status frame carries an error text
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	copyFrames := func(from, to *websocket.Conn) {
		defer wg.Done()
		defer cancel()
		for {
			typ, msg, err := from.Read(ctx)
			if err != nil {
				if code := websocket.CloseStatus(err); code != -1 {
					_ = to.Close(code, "")
				} else {
					_ = to.CloseNow()
				}
				return
			}
			wctx, wcancel := context.WithTimeout(ctx, StallTimeout)
			err = to.Write(wctx, typ, msg)
			wcancel()
			if err != nil {
				_ = from.CloseNow()
				return
			}
		}
	}
	wg.Add(2)
	go copyFrames(client, node)
	go copyFrames(node, client)
	wg.Wait()
	_ = client.CloseNow()
	_ = node.CloseNow()
}
