package node

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/api"
)

func TestLogsReadsTheReconcilersLayout(t *testing.T) {
	root := t.TempDir()
	start := time.Date(2025, 4, 1, 8, 0, 0, 0, time.UTC)
	now := start
	w, err := containerlog.NewWriter(containerlog.WriterConfig{
		// Where the reconciler puts the logs of container "app" of default/web-1.
		Dir:     containerLogDir(root, "default", "web-1", "app"),
		MaxSize: containerlog.DefaultMaxSize, MaxFiles: containerlog.DefaultMaxFiles,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"one\n", "two\n", "three\n"} {
		if err := w.Copy(containerlog.Stdout, strings.NewReader(l)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	w.Close()
	if got, want := containerLogDir(root, "default", "web-1", "app"), filepath.Join(root, podKey(&api.Pod{Namespace: "default", Name: "web-1"}), "app"); got != want {
		t.Fatalf("log dir %s is not under the pod's directory %s, which teardown removes", got, want)
	}

	l := &Logs{Dir: root, Now: func() time.Time { return start.Add(150 * time.Second) }}
	for _, tc := range []struct {
		name string
		ns   string
		pod  string
		opts api.LogOptions
		want string
		err  error
	}{
		{"all", "default", "web-1", api.LogOptions{Container: "app"}, "one\ntwo\nthree\n", nil},
		{"tail", "default", "web-1", api.LogOptions{Container: "app", Tail: api.Lines(1)}, "three\n", nil},
		// Since is resolved on the node's clock: 2m30s after the first line.
		{"since a duration", "default", "web-1", api.LogOptions{Container: "app", Since: 90 * time.Second}, "two\nthree\n", nil},
		{"since a time", "default", "web-1", api.LogOptions{Container: "app", SinceTime: start.Add(2 * time.Minute)}, "three\n", nil},
		{"timestamps", "default", "web-1", api.LogOptions{Container: "app", Tail: api.Lines(1), Timestamps: true}, "2025-04-01T08:02:00.000000000Z three\n", nil},
		{"no previous run", "default", "web-1", api.LogOptions{Container: "app", Previous: true}, "", containerlog.ErrNoPrevious},
		{"another container", "default", "web-1", api.LogOptions{Container: "db"}, "", containerlog.ErrNotFound},
		{"another pod", "default", "web-2", api.LogOptions{Container: "app"}, "", containerlog.ErrNotFound},
		{"a name that is a path", "default", "..", api.LogOptions{Container: "app"}, "", containerlog.ErrNotFound},
		{"a container that is a path", "default_web-1", "x", api.LogOptions{Container: "../web-1/app"}, "", containerlog.ErrNotFound},
		{"no container", "default", "web-1", api.LogOptions{}, "", containerlog.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			err := l.ContainerLogs(context.Background(), tc.ns, tc.pod, tc.opts, &b)
			if !errors.Is(err, tc.err) || b.String() != tc.want {
				t.Fatalf("ContainerLogs = %q, %v; want %q, %v", b.String(), err, tc.want, tc.err)
			}
		})
	}
}
