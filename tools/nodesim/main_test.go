package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/internal/syncbuf"
)

// required are the flags every valid command line has.
var required = []string{
	"--count", "3", "--advertise-addr", "10.97.1.4", "--retry-join", "10.97.1.1", "--retry-join", "10.97.1.2:7500",
	"--ca-file", "/etc/ca.pem", "--join-token-file", "/etc/join.token", "--gossip-key-file", "/etc/gossip.key",
	"--data-dir", "/tmp/sim",
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr []string // substrings of the error; none: valid
	}{
		{name: "valid", args: required},
		{name: "count 0 is refused", args: append(slices.Clone(required), "--count", "0"), wantErr: []string{"--count: 0"}},
		{name: "negative count is refused", args: append(slices.Clone(required), "--count", "-5"), wantErr: []string{"--count: -5"}},
		{name: "concurrency 0 is refused", args: append(slices.Clone(required), "--concurrency", "0"), wantErr: []string{"--concurrency"}},
		{name: "no server", args: []string{"--count", "1", "--advertise-addr", "10.0.0.1", "--ca-file", "a", "--join-token-file", "b", "--gossip-key-file", "c", "--data-dir", "/d"}, wantErr: []string{"--retry-join"}},
		{name: "a retry-join that is no address", args: append(slices.Clone(required), "--retry-join", "server-1"), wantErr: []string{`"server-1" is not an IP`}},
		{name: "no advertise address", args: append(slices.Clone(required), "--advertise-addr", "eth0"), wantErr: []string{"--advertise-addr"}},
		{name: "gossip ports past 65535", args: append(slices.Clone(required), "--count", "1000", "--gossip-port", "65000"), wantErr: []string{"--gossip-port: 65000..65999"}},
		{name: "raft ports unchecked without legacy", args: append(slices.Clone(required), "--raft-port", "65535")},
		{name: "legacy raft ports overlapping gossip ports", args: append(slices.Clone(required), "--legacy-client-raft", "--raft-port", "10001"), wantErr: []string{"overlaps the gossip ports"}},
		{name: "relative data dir", args: append(slices.Clone(required), "--data-dir", "sim"), wantErr: []string{"--data-dir"}},
		{name: "secrets are required", args: []string{"--count", "1", "--advertise-addr", "10.0.0.1", "--retry-join", "10.0.0.2", "--data-dir", "/d"}, wantErr: []string{"--ca-file", "--join-token-file", "--gossip-key-file"}},
		{name: "a label that is not KEY=VALUE", args: append(slices.Clone(required), "--label", "zone"), wantErr: []string{`"zone" is not KEY=VALUE`}},
		{name: "a prefix that makes invalid node names", args: append(slices.Clone(required), "--name-prefix", "Sim_"), wantErr: []string{"--name-prefix"}},
		{name: "stray argument", args: append(slices.Clone(required), "extra"), wantErr: []string{`unexpected argument "extra"`}},
		{name: "capacity", args: append(slices.Clone(required), "--cpu-millis", "1000000", "--memory-mib", "1048576")},
		{name: "negative capacity", args: append(slices.Clone(required), "--cpu-millis", "-1"), wantErr: []string{"--cpu-millis -1"}},
		{name: "bad log level", args: append(slices.Clone(required), "--log-level", "loud"), wantErr: []string{"--log-level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want one with %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestRunRefusesCountZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(slices.Clone(required), "--count", "0")
	if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2 (usage)", code)
	}
	if !strings.Contains(stderr.String(), "--count: 0") {
		t.Errorf("stderr does not say what is wrong:\n%s", stderr.String())
	}
	if code := run(context.Background(), []string{"-h"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
}

func TestNodeConfig(t *testing.T) {
	o, err := parseFlags(append(slices.Clone(required), "--count", "1000", "--legacy-client-raft", "--label", "pool=sim"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.nodeConfig(42, slog.New(slog.DiscardHandler))
	if cfg.NodeName != "sim-042" || cfg.DataDir != "/tmp/sim/sim-042" {
		t.Errorf("name %q, data dir %q; want sim-042 in /tmp/sim/sim-042", cfg.NodeName, cfg.DataDir)
	}
	if cfg.GossipPort != 10042 || cfg.RaftPort != 20042 || cfg.RPCPort != 7403 {
		t.Errorf("ports gossip %d raft %d rpc %d; want 10042, 20042 and the servers' 7403", cfg.GossipPort, cfg.RaftPort, cfg.RPCPort)
	}
	// The servers' gossip port, not the node's own.
	if want := []string{"10.97.1.1:7402", "10.97.1.2:7500"}; !slices.Equal(cfg.RetryJoin, want) {
		t.Errorf("retry join %v, want %v", cfg.RetryJoin, want)
	}
	if !cfg.LegacyClientRaft || cfg.Server || cfg.Labels["pool"] != "sim" {
		t.Errorf("legacy %t, server %t, labels %v", cfg.LegacyClientRaft, cfg.Server, cfg.Labels)
	}
	if o.name(0) != "sim-000" || o.name(999) != "sim-999" {
		t.Errorf("names %q..%q", o.name(0), o.name(999))
	}
	// What agent.RunSimulatedNodeWith checks.
	cfg.Token = "unused"
	if err := cfg.Validate(); err != nil {
		t.Errorf("node config is not a valid client config: %v", err)
	}
}

// fakeNodes stands in for agent.RunSimulatedNodeWith: a node registers
// once the test lets it (a token on gate), then runs until ctx ends or it
// is crashed. fail makes the named node fail before it registers.
type fakeNodes struct {
	gate chan struct{}
	fail string

	mu                  sync.Mutex
	started, joining    int
	maxJoining, stopped int
	crashed             []string
}

func (f *fakeNodes) run(ctx context.Context, cfg agent.Config, opts agent.SimulatedOptions) error {
	f.mu.Lock()
	f.started++
	f.joining++
	f.maxJoining = max(f.maxJoining, f.joining)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.stopped++
		f.mu.Unlock()
	}()
	if cfg.NodeName == f.fail {
		return errors.New("join refused: bad token")
	}
	select {
	case <-f.gate:
	case <-ctx.Done():
		return nil
	}
	f.mu.Lock()
	f.joining--
	f.mu.Unlock()
	opts.Registered()
	select {
	case <-ctx.Done():
	case <-opts.Crash:
		f.mu.Lock()
		f.crashed = append(f.crashed, cfg.NodeName)
		f.mu.Unlock()
	}
	return nil
}

func (f *fakeNodes) counts() (started, maxJoining, stopped int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started, f.maxJoining, f.stopped
}

// waitFor polls cond until it holds, failing t after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a log sink a test reads while something writes it.
type syncBuffer = syncbuf.Buffer

func newSimulator(t *testing.T, f *fakeNodes, count, concurrency int) (*simulator, *syncBuffer) {
	t.Helper()
	o, err := parseFlags(append(slices.Clone(required), "--count", fmt.Sprint(count), "--concurrency", fmt.Sprint(concurrency),
		"--control", filepath.Join(t.TempDir(), "control.sock")), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	return &simulator{opts: o, log: slog.New(slog.DiscardHandler), stdout: out, stderr: io.Discard, runNode: f.run}, out
}

func control(t *testing.T, path, cmd string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, cmd)
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(answer)
}

func TestSimulatorBoundsJoinsCrashesAndStops(t *testing.T) {
	const count, concurrency = 10, 3
	f := &fakeNodes{gate: make(chan struct{})}
	s, stdout := newSimulator(t, f, count, concurrency)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()

	// One node registers at a time: each lets exactly one more start.
	for released := 0; released <= count; released++ {
		want := min(concurrency+released, count)
		waitFor(t, fmt.Sprintf("%d nodes started", want), func() bool { started, _, _ := f.counts(); return started >= want })
		if released < count {
			f.gate <- struct{}{}
		}
	}
	waitFor(t, "the all-registered line", func() bool { return strings.Contains(stdout.String(), "all 10 nodes registered") })
	if started, maxJoining, _ := f.counts(); started != count || maxJoining > concurrency {
		t.Errorf("%d nodes started, up to %d joining at once; want %d, at most %d", started, maxJoining, count, concurrency)
	}

	sock := s.opts.control
	if got := control(t, sock, "status"); got != "ok 10/10 registered" {
		t.Errorf("status: %q", got)
	}
	if got := control(t, sock, "crash sim-7"); got != "ok crashed sim-7" {
		t.Errorf("crash: %q", got)
	}
	if got := control(t, sock, "crash sim-7"); got != "ok crashed sim-7" {
		t.Errorf("a second crash of the same node: %q", got)
	}
	for _, bad := range []string{"crash nobody", "reboot sim-1", ""} {
		if got := control(t, sock, bad); !strings.HasPrefix(got, "error: ") {
			t.Errorf("%q: answered %q, want an error", bad, got)
		}
	}
	waitFor(t, "sim-7 crashed", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return slices.Equal(f.crashed, []string{"sim-7"}) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped by its context: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if _, _, stopped := f.counts(); stopped != count {
		t.Errorf("%d of %d nodes had stopped when run returned", stopped, count)
	}
}

func TestSimulatorFailsWhenANodeCannotJoin(t *testing.T) {
	f := &fakeNodes{gate: make(chan struct{}), fail: "sim-2"}
	close(f.gate) // everyone else registers at once
	s, _ := newSimulator(t, f, 5, 2)
	err := s.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "node sim-2: join refused") {
		t.Fatalf("run: %v; want node sim-2's error", err)
	}
	if started, _, stopped := f.counts(); stopped != started {
		t.Errorf("%d nodes started, %d stopped when run returned", started, stopped)
	}
}
