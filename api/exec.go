package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"unicode/utf8"
)

// Exec runs a command in a running container:
//
//	GET /v1/namespaces/{ns}/pods/{pod}/exec?container=C&command=sh&command=-c&command=...&tty=true&stdin=true
//
// upgraded to a WebSocket that offers the subprotocol ExecProtocol. Every
// message is binary; its first byte names a stream and the rest is its
// data, as Kubernetes' v5.channel.k8s.io:
//
//	0  ExecStdin   client → agent  bytes for the command's stdin (with stdin=true)
//	1  ExecStdout  agent → client  the command's stdout (its terminal with tty=true)
//	2  ExecStderr  agent → client  its stderr (never with tty=true: the terminal carries both)
//	3  ExecStatus  agent → client  the last message: JSON ExecStatus, the exit code or why there is none
//	4  ExecResize  client → agent  JSON TermSize: the terminal's new size (tty=true)
//	255 ExecClose  client → agent  a second byte names the stream to close: [255, 0] closes stdin (EOF)
//
// A message carries at most MaxExecFrame bytes of data. The agent closes
// the WebSocket after the status; a client that goes away ends the
// command (it is killed). Refusals come before the upgrade, as plain
// HTTP answers with an ErrorResponse: 400 bad options or a command that
// could not start (no such program), 404 no such pod or container, 409
// the container is not running, 426 not a WebSocket offering
// ExecProtocol, 429 too many execs, 502 its node could not be asked.
const ExecProtocol = "v1.exec.flotilla.io"

// Stream IDs of the exec protocol (ExecProtocol).
const (
	ExecStdin  byte = 0
	ExecStdout byte = 1
	ExecStderr byte = 2
	ExecStatus byte = 3
	ExecResize byte = 4
	ExecClose  byte = 255
)

// Bounds of an exec request.
const (
	// MaxExecFrame bounds the data of one exec message; senders split
	// larger writes.
	MaxExecFrame = 32 << 10
	// MaxExecArgs bounds the command's arguments, MaxExecArgLen each one,
	// MaxExecCommandLen all of them together: the command travels in the
	// query, which, encoded, must fit the agents' 64 KiB of headers.
	MaxExecArgs       = 256
	MaxExecArgLen     = 4096
	MaxExecCommandLen = 16 << 10
)

// ExecOptions says what to run and how.
type ExecOptions struct {
	// Container names the container; it may be empty for a pod with one.
	Container string
	// Command is the program and its arguments; it is not run through a
	// shell (run ["sh", "-c", "..."] for one). Required.
	Command []string
	// TTY gives the command a terminal: stdout and stderr arrive together
	// on ExecStdout, and ExecResize changes its size.
	TTY bool
	// Stdin connects the command's stdin to ExecStdin messages; without it
	// the command's stdin is empty.
	Stdin bool
}

// TermSize is a terminal's size in characters (ExecResize).
type TermSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// ExecResult is the last message of an exec (ExecStatus): the command's
// exit code, or Error when it did not run to an exit (it could not start,
// was killed because the client went away, the node failed).
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// Validate checks the options as the API does.
func (o ExecOptions) Validate() error {
	var errs []error
	if o.Container != "" {
		if err := ValidateName(o.Container); err != nil {
			errs = append(errs, fmt.Errorf("container: %w", err))
		}
	}
	total := 0
	switch {
	case len(o.Command) == 0:
		errs = append(errs, errors.New("command: required; give the program and its arguments (e.g. sh -c 'ls /')"))
	case len(o.Command) > MaxExecArgs:
		errs = append(errs, fmt.Errorf("command: %d arguments; at most %d", len(o.Command), MaxExecArgs))
	case o.Command[0] == "":
		errs = append(errs, errors.New("command: the program (first argument) is empty"))
	}
	for i, a := range o.Command {
		total += len(a)
		switch {
		case len(a) > MaxExecArgLen:
			errs = append(errs, fmt.Errorf("command[%d]: %d bytes; at most %d", i, len(a), MaxExecArgLen))
		case !utf8.ValidString(a):
			errs = append(errs, fmt.Errorf("command[%d]: not valid UTF-8", i))
		}
		for _, r := range a {
			if r == 0 {
				errs = append(errs, fmt.Errorf("command[%d]: contains a NUL byte", i))
				break
			}
		}
	}
	if total > MaxExecCommandLen {
		errs = append(errs, fmt.Errorf("command: %d bytes in all; at most %d", total, MaxExecCommandLen))
	}
	return errors.Join(errs...)
}

// Query encodes the options as the route's query parameters.
func (o ExecOptions) Query() url.Values {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	for _, a := range o.Command {
		q.Add("command", a)
	}
	if o.TTY {
		q.Set("tty", "true")
	}
	if o.Stdin {
		q.Set("stdin", "true")
	}
	return q
}

// ParseExecOptions reads the route's query parameters: container, command
// (once per argument, in order), tty and stdin. A flag given without a
// value (?tty) is true, as are 1 and true.
func ParseExecOptions(q url.Values) (ExecOptions, error) {
	var o ExecOptions
	r := queryReader{q: q}
	r.only("container, command (once per argument), tty and stdin", "container", "command", "tty", "stdin")
	o.Container = q.Get("container")
	o.Command = q["command"]
	r.flag("tty", &o.TTY)
	r.flag("stdin", &o.Stdin)
	if err := r.err(); err != nil {
		return o, err
	}
	return o, o.Validate()
}

// ExecFrame returns the message carrying data on stream.
func ExecFrame(stream byte, data []byte) []byte {
	m := make([]byte, 1+len(data))
	m[0] = stream
	copy(m[1:], data)
	return m
}

// ExecResizeFrame returns the message that resizes the terminal to s.
func ExecResizeFrame(s TermSize) []byte {
	b, _ := json.Marshal(s)
	return ExecFrame(ExecResize, b)
}

// ExecStatusFrame returns the message that ends an exec with r.
func ExecStatusFrame(r ExecResult) []byte {
	b, _ := json.Marshal(r)
	return ExecFrame(ExecStatus, b)
}

// ParseTermSize reads an ExecResize message's data: both sides between 1
// and 10000 characters.
func ParseTermSize(data []byte) (TermSize, error) {
	var s TermSize
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("resize: not JSON {\"width\":W,\"height\":H}: %w", err)
	}
	if s.Width == 0 || s.Height == 0 || s.Width > 10000 || s.Height > 10000 {
		return s, fmt.Errorf("resize: %dx%d; width and height must be 1 to 10000", s.Width, s.Height)
	}
	return s, nil
}

// ParseExecResult reads an ExecStatus message's data.
func ParseExecResult(data []byte) (ExecResult, error) {
	var r ExecResult
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("exec status: not JSON: %w", err)
	}
	return r, nil
}
