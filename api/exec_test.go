package api

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestExecOptionsQueryRoundTrip(t *testing.T) {
	for _, o := range []ExecOptions{
		{Command: []string{"sh"}},
		{Container: "app", Command: []string{"sh", "-c", "echo 'a b' && exit 3", ""}, TTY: true, Stdin: true},
		{Command: []string{"ls", "-l", "/proc/self/fd"}, Stdin: true},
	} {
		got, err := ParseExecOptions(o.Query())
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if got.Container != o.Container || !slices.Equal(got.Command, o.Command) || got.TTY != o.TTY || got.Stdin != o.Stdin {
			t.Errorf("round trip of %+v gave %+v", o, got)
		}
	}
}

func TestParseExecOptions(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  string // error text; "" for none
		opts  ExecOptions
	}{
		{query: "command=sh&tty&stdin=1", opts: ExecOptions{Command: []string{"sh"}, TTY: true, Stdin: true}},
		{query: "command=sh&tty=false&stdin=0&container=web", opts: ExecOptions{Container: "web", Command: []string{"sh"}}},
		{query: "", want: "command: required"},
		{query: "command=", want: "the program (first argument) is empty"},
		{query: "command=sh&container=Bad_Name", want: "container:"},
		{query: "command=sh&tty=yes", want: `tty: "yes" is not true or false`},
		{query: "command=sh&user=root", want: `unknown parameter "user"`},
		{query: "command=a%00b", want: "command[0]: contains a NUL byte"},
		{query: "command=%ff", want: "command[0]: not valid UTF-8"},
		{query: "command=" + strings.Repeat("a", MaxExecArgLen+1), want: "command[0]: 4097 bytes; at most 4096"},
		{query: strings.Repeat("command=x&", MaxExecArgs+1), want: "257 arguments"},
		{query: strings.Repeat("command="+strings.Repeat("a", 4000)+"&", 5), want: "20000 bytes in all; at most 16384"},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseExecOptions(q)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%.60q: %v", tc.query, err)
		case tc.want == "" && (o.Container != tc.opts.Container || !slices.Equal(o.Command, tc.opts.Command) || o.TTY != tc.opts.TTY || o.Stdin != tc.opts.Stdin):
			t.Errorf("%.60q: %+v, want %+v", tc.query, o, tc.opts)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%.60q: error %v, want it to say %q", tc.query, err, tc.want)
		}
	}
}

func TestExecFrames(t *testing.T) {
	if f := ExecFrame(ExecStdin, []byte("hi")); string(f) != "\x00hi" {
		t.Errorf("stdin frame %q", f)
	}
	r := ExecResizeFrame(TermSize{Width: 120, Height: 40})
	if r[0] != ExecResize {
		t.Fatalf("resize frame %q", r)
	}
	if s, err := ParseTermSize(r[1:]); err != nil || s != (TermSize{Width: 120, Height: 40}) {
		t.Errorf("ParseTermSize = %+v, %v", s, err)
	}
	for _, bad := range []string{`{"width":0,"height":5}`, `{"width":80,"height":20000}`, `not json`, `{"width":-1,"height":5}`, ``} {
		if _, err := ParseTermSize([]byte(bad)); err == nil {
			t.Errorf("ParseTermSize(%q): no error", bad)
		}
	}
	st := ExecStatusFrame(ExecResult{ExitCode: 3})
	if st[0] != ExecStatus || string(st[1:]) != `{"exit_code":3}` {
		t.Errorf("status frame %q", st)
	}
	if res, err := ParseExecResult([]byte(`{"exit_code":-1,"error":"killed"}`)); err != nil || res.ExitCode != -1 || res.Error != "killed" {
		t.Errorf("ParseExecResult = %+v, %v", res, err)
	}
}
