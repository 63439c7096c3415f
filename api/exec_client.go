package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// execHandshakeTimeout bounds the wait for an exec to start: the agent
// upgrades the request as soon as the command runs.
const execHandshakeTimeout = 30 * time.Second

// Exec runs opts.Command in a running container of pod ns/pod (GET
// /v1/namespaces/{ns}/pods/{pod}/exec, a WebSocket speaking ExecProtocol)
// and returns its exit code once it has exited and its output has been
// written to stdout and stderr (stdout only with opts.TTY: the terminal
// carries both). With opts.Stdin, stdin is copied to the command until it
// ends (io.EOF closes the command's stdin); a nil stdin is an empty one.
// Each size received on resize changes the terminal's (opts.TTY).
//
// The session lasts until the command exits or ctx ends (the command is
// then killed); the client's Timeout does not apply. A refusal before the
// command runs (no such pod or container, not running, busy) is an *Error;
// a command that ran but has no exit code (killed when its node failed,
// say) returns -1 and an error. Exec does not wait for a Read of stdin that
// blocks past the end of the session.
func (c *Client) Exec(ctx context.Context, ns, pod string, opts ExecOptions, stdin io.Reader, stdout, stderr io.Writer, resize <-chan TermSize) (exitCode int, err error) {
	if err := opts.Validate(); err != nil {
		return -1, fmt.Errorf("exec in pod %s/%s: %w", ns, pod, err)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	u := c.base.JoinPath("/v1/namespaces/" + url.PathEscape(ns) + "/pods/" + url.PathEscape(pod) + "/exec")
	u.RawQuery = opts.Query().Encode()
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	dctx, cancelDial := context.WithTimeout(ctx, execHandshakeTimeout)
	conn, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient:      c.upgradeClient(),
		HTTPHeader:      h,
		Subprotocols:    []string{ExecProtocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	cancelDial()
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return -1, answerError(resp)
		}
		return -1, fmt.Errorf("exec: GET %s: %w; is flotilla-agent running there? (set FLOTILLA_ADDR)", u.Redacted(), err)
	}
	defer conn.CloseNow()
	if conn.Subprotocol() != ExecProtocol {
		return -1, fmt.Errorf("exec: the agent at %s does not speak %s; upgrade it", c.base.Redacted(), ExecProtocol)
	}
	// The status frame carries an error text beside the exit code.
	conn.SetReadLimit(1 + MaxExecFrame + 1024)

	// The resize goroutine ends when ctx is cancelled: wait for it after.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Stdin {
		go sendStdin(ctx, conn, stdin) // may block in stdin's Read: not waited for
	}
	if opts.TTY && resize != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case s, ok := <-resize:
					if !ok {
						return
					}
					if conn.Write(ctx, websocket.MessageBinary, ExecResizeFrame(s)) != nil {
						return
					}
				}
			}
		}()
	}
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return -1, fmt.Errorf("exec in pod %s/%s: %w", ns, pod, ctx.Err())
			}
			return -1, fmt.Errorf("exec in pod %s/%s: the session ended without the command's exit code: %w", ns, pod, err)
		}
		if typ != websocket.MessageBinary || len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case ExecStdout:
			if _, err := stdout.Write(msg[1:]); err != nil {
				return -1, fmt.Errorf("exec: write the command's output: %w", err)
			}
		case ExecStderr:
			if _, err := stderr.Write(msg[1:]); err != nil {
				return -1, fmt.Errorf("exec: write the command's error output: %w", err)
			}
		case ExecStatus:
			res, err := ParseExecResult(msg[1:])
			_ = conn.Close(websocket.StatusNormalClosure, "")
			switch {
			case err != nil:
				return -1, err
			case res.Error != "":
				return -1, fmt.Errorf("exec in pod %s/%s: %s", ns, pod, res.Error)
			}
			return res.ExitCode, nil
		}
	}
}

// sendStdin copies r to the command's stdin and closes it at EOF.
func sendStdin(ctx context.Context, conn *websocket.Conn, r io.Reader) {
	if r != nil {
		buf := make([]byte, 1+MaxExecFrame)
		buf[0] = ExecStdin
		for {
			n, err := r.Read(buf[1:])
			if n > 0 {
				if conn.Write(ctx, websocket.MessageBinary, buf[:1+n]) != nil {
					return
				}
			}
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return // a broken stdin is not an EOF: the command keeps waiting for input
			}
		}
	}
	_ = conn.Write(ctx, websocket.MessageBinary, []byte{ExecClose, ExecStdin})
}

// upgradeClient is the client's HTTP client for a WebSocket: no overall
// timeout (a session lasts as long as its command) and HTTP/1.1, as an
// upgrade needs.
func (c *Client) upgradeClient() *http.Client {
	hc := *c.hc
	hc.Timeout = 0
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if tr, ok := rt.(*http.Transport); ok {
		tr = tr.Clone()
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		if tr.TLSClientConfig != nil {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		hc.Transport = tr
	}
	return &hc
}

// answerError reads a refusal (at most the first 1 KiB the WebSocket
// library keeps of its body).
func answerError(resp *http.Response) error {
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return &Error{StatusCode: resp.StatusCode, Message: errorText(body)}
}

// errorText is the message of an error answer: its ErrorResponse, or its
// text.
func errorText(body []byte) string {
	var er ErrorResponse
	if json.Unmarshal(body, &er) == nil && er.Error != "" {
		return er.Error
	}
	return strings.TrimSpace(string(body))
}
