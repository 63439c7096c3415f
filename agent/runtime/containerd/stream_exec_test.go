package containerd_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/syncbuf"
)

// execServer serves exec sessions into e's containers as an agent's API
// does for its own pods (execws over the runtime, no token), so the tests
// drive the same path a user's `flotilla exec` takes, through
// api.Client.Exec.
func execServer(t testing.TB, e *env) *api.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts, err := api.ParseExecOptions(r.URL.Query())
		if err != nil {
			execws.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		id := r.URL.Query().Get("container")
		execws.ServeHTTP(r.Context(), w, r, opts, func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
			return e.rt.StartExec(ctx, id, runtime.StreamExec{Command: opts.Command, TTY: opts.TTY, IO: io})
		}, slog.New(slog.DiscardHandler))
	}))
	t.Cleanup(srv.Close)
	c, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// syncBuffer is a log sink a test reads while something writes it.
type syncBuffer = syncbuf.Buffer

// waitOutput polls buf until re matches, and returns the match's groups.
func waitOutput(t *testing.T, buf *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output within 15s:\n%s", re, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStreamExec(t *testing.T) {
	e := setupBare(t)
	importBusybox(t, e)
	// The container runs as uid 1234: an exec must too.
	logDir := shell(t, e, runtime.ContainerSpec{ID: "target", RunAsUser: ptr[int64](1234), PidsLimit: 64}, `echo started; exec sleep 3600`)
	waitFile(t, logDir, "started")
	c := execServer(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exec := func(t *testing.T, opts api.ExecOptions, stdin io.Reader) (int, string, string) {
		t.Helper()
		opts.Container = "target"
		var stdout, stderr bytes.Buffer
		code, err := c.Exec(ctx, "default", "pod", opts, stdin, &stdout, &stderr, nil)
		if err != nil {
			t.Fatalf("Exec %q: %v (stdout %q, stderr %q)", opts.Command, err, stdout.String(), stderr.String())
		}
		return code, stdout.String(), stderr.String()
	}

	t.Run("exit code", func(t *testing.T) {
		code, out, errOut := exec(t, api.ExecOptions{Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, nil)
		if code != 3 || out != "out\n" || errOut != "err\n" {
			t.Errorf("exit code %d, stdout %q, stderr %q; want 3, \"out\\n\", \"err\\n\"", code, out, errOut)
		}
		checkOnlyInit(t, e, "target")
	})
	t.Run("stdin echoed back", func(t *testing.T) {
		in := strings.Repeat("hello from stdin\n", 5000) // 85 kB: several frames
		code, out, _ := exec(t, api.ExecOptions{Command: []string{"cat"}, Stdin: true}, strings.NewReader(in))
		if code != 0 || out != in {
			t.Errorf("cat: exit code %d, %d bytes back of %d", code, len(out), len(in))
		}
		// No stdin: an empty one, so cat ends at once.
		if code, out, _ := exec(t, api.ExecOptions{Command: []string{"cat"}}, nil); code != 0 || out != "" {
			t.Errorf("cat without stdin: exit code %d, output %q", code, out)
		}
		checkOnlyInit(t, e, "target")
	})
	t.Run("concurrent", func(t *testing.T) {
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out bytes.Buffer
				code, err := c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "target", Command: []string{"sh", "-c", "echo $0; exit $0", strconv.Itoa(i)}}, nil, &out, nil, nil)
				if err != nil || code != i || out.String() != strconv.Itoa(i)+"\n" {
					t.Errorf("exec %d: exit code %d, output %q, %v", i, code, out.String(), err)
				}
			}()
		}
		wg.Wait()
		checkOnlyInit(t, e, "target")
	})
	t.Run("sandbox and user", func(t *testing.T) {
		_, out, _ := exec(t, api.ExecOptions{Command: []string{"sh", "-c", "id -u; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; cat /proc/self/cgroup"}}, nil)
		for _, want := range []string{"1234\n", "Seccomp:\t2\n", "NoNewPrivs:\t1\n", "CapEff:\t0000000000000000\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("exec output lacks %q (the container's user, seccomp filter, no capabilities as uid 1234):\n%s", want, out)
			}
		}
		// In the container's cgroup, so under its pids limit.
		if !regexp.MustCompile(`(?m)^\d+:pids:` + regexp.QuoteMeta(e.cgroup) + `/target$`).MatchString(out) {
			t.Errorf("the exec is not in the container's pids cgroup %s/target:\n%s", e.cgroup, out)
		}
	})
	t.Run("tty and resize", func(t *testing.T) {
		stdinR, stdinW := io.Pipe()
		defer stdinW.Close()
		resize := make(chan api.TermSize, 1)
		resize <- api.TermSize{Width: 80, Height: 24}
		var out syncBuffer
		type result struct {
			code int
			err  error
		}
		done := make(chan result, 1)
		go func() {
			code, err := c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "target", Command: []string{"sh"}, TTY: true, Stdin: true}, stdinR, &out, nil, resize)
			done <- result{code, err}
		}()
		send := func(s string) {
			if _, err := io.WriteString(stdinW, s); err != nil {
				t.Fatal(err)
			}
		}
		send("tty; echo TTY-DONE\n")
		m := waitOutput(t, &out, regexp.MustCompile(`(/dev/pts/\d+)\r?\n`))
		waitOutput(t, &out, regexp.MustCompile(`\nTTY-DONE`))
		t.Logf("tty: %s", m[1])
		// The first size came before the shell read anything; poll, as a
		// resize frame and the keystrokes take different paths.
		sizeRe := regexp.MustCompile(`SIZE=(\d+) (\d+)\r?\n`)
		waitSize := func(rows, cols string) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for {
				before := len(sizeRe.FindAllStringSubmatch(out.String(), -1))
				send("echo SIZE=$(stty size)\n")
				var all [][]string
				for len(all) <= before {
					if time.Now().After(deadline) {
						t.Fatalf("no answer to stty size:\n%s", out.String())
					}
					time.Sleep(20 * time.Millisecond)
					all = sizeRe.FindAllStringSubmatch(out.String(), -1)
				}
				last := all[len(all)-1]
				if last[1] == rows && last[2] == cols {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("stty size = %s %s, want %s %s", last[1], last[2], rows, cols)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		waitSize("24", "80")
		resize <- api.TermSize{Width: 132, Height: 43}
		waitSize("43", "132")
		send("exit 7\n")
		select {
		case r := <-done:
			if r.err != nil || r.code != 7 {
				t.Fatalf("Exec = %d, %v; want exit code 7", r.code, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the shell did not exit; output:\n%s", out.String())
		}
		checkOnlyInit(t, e, "target")
	})
	t.Run("client goes away", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		var out syncBuffer
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(cctx, "default", "pod", api.ExecOptions{Container: "target", Command: []string{"sh", "-c", "echo up; exec sleep 3600"}}, nil, &out, nil, nil)
			done <- err
		}()
		waitOutput(t, &out, regexp.MustCompile(`up\n`))
		ccancel()
		if err := <-done; err == nil {
			t.Error("Exec with a cancelled context: no error")
		}
		// The sleep was killed and the exec process deleted.
		checkOnlyInit(t, e, "target")
	})
	t.Run("refusals", func(t *testing.T) {
		_, err := c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "nope", Command: []string{"true"}}, nil, nil, nil, nil)
		if !api.IsNotFound(err) {
			t.Errorf("exec in a missing container: %v, want a 404", err)
		}
		_, err = c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "target", Command: []string{"/no/such/program"}}, nil, nil, nil, nil)
		if !isStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "no such file or directory") {
			t.Errorf("exec of a missing program: %v, want a 400 that says why", err)
		}
		checkOnlyInit(t, e, "target")
		if _, err := e.rt.Stop(ctx, "target", time.Second); err != nil {
			t.Fatal(err)
		}
		_, err = c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "target", Command: []string{"true"}}, nil, nil, nil, nil)
		if !isStatus(err, http.StatusConflict) {
			t.Errorf("exec in a stopped container: %v, want a 409", err)
		}
	})
	if err := e.rt.Remove(ctx, "target"); err != nil {
		t.Fatal(err)
	}
}

func isStatus(err error, code int) bool {
	e, ok := err.(*api.Error)
	return ok && e.StatusCode == code
}
