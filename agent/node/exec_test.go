package node

import (
	"context"
	"errors"
	"testing"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

type fakeStreamExecer struct{ ids []string }

func (f *fakeStreamExecer) StartExec(_ context.Context, id string, _ runtime.StreamExec) (runtime.ExecProcess, error) {
	f.ids = append(f.ids, id)
	if id == containerID(&api.Pod{Namespace: "default", Name: "gone"}, "app") {
		return nil, runtime.ErrContainerNotFound
	}
	return doneProc{}, nil
}

type doneProc struct{}

func (doneProc) Resize(context.Context, uint16, uint16) error { return nil }
func (doneProc) Wait(context.Context) (int, error)            { return 0, nil }

func TestExecBoundsAndNames(t *testing.T) {
	rt := &fakeStreamExecer{}
	e := NewExec(rt, 2)
	ctx := context.Background()
	opts := api.ExecOptions{Container: "app", Command: []string{"sh"}}
	p1, err := e.StartExec(ctx, "default", "web", opts, runtime.ExecIO{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartExec(ctx, "default", "web", opts, runtime.ExecIO{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartExec(ctx, "default", "web", opts, runtime.ExecIO{}); !errors.Is(err, execws.ErrBusy) {
		t.Fatalf("a third exec with a bound of 2: %v, want ErrBusy", err)
	}
	// Waiting for one frees its slot, once.
	p1.Wait(ctx)
	p1.Wait(ctx)
	if _, err := e.StartExec(ctx, "default", "web", opts, runtime.ExecIO{}); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	if _, err := e.StartExec(ctx, "default", "web", opts, runtime.ExecIO{}); !errors.Is(err, execws.ErrBusy) {
		t.Fatalf("a slot freed twice: %v", err)
	}
	if want := containerID(&api.Pod{Namespace: "default", Name: "web"}, "app"); rt.ids[0] != want {
		t.Errorf("exec'd in %q, want the pod's container %q", rt.ids[0], want)
	}

	e = NewExec(rt, 2)
	// A failed start frees its slot.
	for range 3 {
		if _, err := e.StartExec(ctx, "default", "gone", opts, runtime.ExecIO{}); !errors.Is(err, runtime.ErrContainerNotFound) {
			t.Fatalf("a missing container: %v", err)
		}
	}
	// Names that cannot be a pod's never reach the runtime.
	n := len(rt.ids)
	for _, tc := range []struct{ ns, pod, container string }{
		{"../etc", "web", "app"}, {"default", "a/b", "app"}, {"default", "web", "../../x"}, {"default", "web", ""},
	} {
		if _, err := e.StartExec(ctx, tc.ns, tc.pod, api.ExecOptions{Container: tc.container, Command: []string{"sh"}}, runtime.ExecIO{}); !errors.Is(err, runtime.ErrContainerNotFound) {
			t.Errorf("%+v: %v, want not found", tc, err)
		}
	}
	if _, err := e.StartExec(ctx, "default", "web", api.ExecOptions{Container: "app"}, runtime.ExecIO{}); err == nil {
		t.Error("an empty command was started")
	}
	if len(rt.ids) != n {
		t.Errorf("bad names reached the runtime: %q", rt.ids[n:])
	}
}
