package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

const (
	alive  = membership.StatusAlive
	failed = membership.StatusFailed
	left   = membership.StatusLeft
	server = membership.RoleServer
	client = membership.RoleClient
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// policyFixture is a Policy for node s1 on fakes.
type policyFixture struct {
	rec      *recorder
	raft     *fakeRaft
	members  *fakeMembers
	verifier *fakeVerifier
	prober   *fakeProber
	clock    *clock
	policy   *Policy
}

func newPolicyFixture(change func(*PolicyConfig)) *policyFixture {
	rec := &recorder{}
	f := &policyFixture{
		rec:      rec,
		raft:     newFakeRaft(rec),
		members:  &fakeMembers{},
		verifier: &fakeVerifier{rec: rec, certs: map[string]string{}},
		prober:   &fakeProber{rec: rec, states: map[string]rpc.RaftState{}, errs: map[string]error{}},
		clock:    &clock{t: t0},
	}
	cfg := PolicyConfig{
		NodeName: "s1", Server: true, BootstrapExpect: 3,
		RemoveGrace: 5 * time.Minute, VerifyTTL: 10 * time.Minute,
		Raft: f.raft, Members: f.members, Verifier: f.verifier, Prober: f.prober,
		Now: f.clock.Now,
	}
	if change != nil {
		change(&cfg)
	}
	f.policy = NewPolicy(cfg)
	return f
}

// certs puts each member's own certificate at its raft address.
func (f *policyFixture) certs(ms ...membership.Member) {
	for _, m := range ms {
		f.verifier.certs[m.Meta.RaftAddr] = m.Meta.Role + "/" + m.Name
	}
}

var (
	s1 = member("s1", server, alive, "10.0.0.1")
	s2 = member("s2", server, alive, "10.0.0.2")
	s3 = member("s3", server, alive, "10.0.0.3")
	c1 = member("c1", client, alive, "10.0.0.11")
	c2 = member("c2", client, alive, "10.0.0.12")
)

func with(m membership.Member, status membership.Status) membership.Member {
	m.Status = status
	return m
}

func TestBootstrap(t *testing.T) {
	bootstrap3 := "bootstrap [s1@10.0.0.1:7300/voter=true s2@10.0.0.2:7300/voter=true s3@10.0.0.3:7300/voter=true]"
	tests := []struct {
		name    string
		setup   func(*policyFixture)
		members []membership.Member
		// wantDone: this server is part of a raft cluster. wantErr says
		// why it waits. wantEvents are the calls made, in order.
		wantDone   bool
		wantErr    string
		wantEvents []string
	}{
		{
			name:     "a server with raft state asks nobody",
			setup:    func(f *policyFixture) { f.raft.hasState = true },
			members:  []membership.Member{s1},
			wantDone: true,
		},
		{
			name:    "below BootstrapExpect",
			members: []membership.Member{s1, s2, c1, c2},
			wantErr: "waiting for 3 servers, 2 are alive",
		},
		{
			name:    "a failed server does not count",
			members: []membership.Member{s1, s2, with(s3, failed)},
			wantErr: "waiting for 3 servers, 2 are alive",
		},
		{
			name:    "a left server does not count",
			members: []membership.Member{s1, s2, with(s3, left)},
			wantErr: "waiting for 3 servers, 2 are alive",
		},
		{
			name: "a server has raft state: join it rather than bootstrap a second cluster",
			setup: func(f *policyFixture) {
				f.certs(s2, s3)
				f.prober.states["10.0.0.3:7400"] = rpc.RaftState{HasState: true, Leader: "s3"}
			},
			members: []membership.Member{s1, s2, s3},
			wantErr: `a raft cluster exists already (the server at 10.0.0.3:7400 knows it, leader "s3")`,
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"probe 10.0.0.2:7400", "probe 10.0.0.3:7400"},
		},
		{
			name: "a retry-join address has raft state",
			setup: func(f *policyFixture) {
				f.certs(s2, s3)
				f.policy.cfg.Fallback = []string{"10.0.0.2:7400", "10.0.0.9:7400"}
				f.prober.states["10.0.0.9:7400"] = rpc.RaftState{HasState: true}
			},
			members: []membership.Member{s1, s2, s3},
			wantErr: "a raft cluster exists already",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"probe 10.0.0.2:7400", "probe 10.0.0.3:7400", "probe 10.0.0.9:7400"},
		},
		{
			name:    "a server cannot be asked: no bootstrap, but the others are asked too",
			setup:   func(f *policyFixture) { f.certs(s2, s3); f.prober.errs["10.0.0.2:7400"] = errBoom },
			members: []membership.Member{s1, s2, s3},
			wantErr: "cannot tell whether a raft cluster exists: boom",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"probe 10.0.0.2:7400", "probe 10.0.0.3:7400"},
		},
		{
			name: "a retry-join address cannot be asked",
			setup: func(f *policyFixture) {
				f.certs(s2, s3)
				f.policy.cfg.Fallback = []string{"10.0.0.9:7400"}
				f.prober.errs["10.0.0.9:7400"] = errBoom
			},
			members: []membership.Member{s1, s2, s3},
			wantErr: "cannot tell whether a raft cluster exists: boom",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"probe 10.0.0.2:7400", "probe 10.0.0.3:7400", "probe 10.0.0.9:7400"},
		},
		{
			name: "a server's raft address holds a client certificate",
			setup: func(f *policyFixture) {
				f.certs(s2)
				f.verifier.certs[s3.Meta.RaftAddr] = "client/s3"
			},
			members:    []membership.Member{s1, s2, s3},
			wantErr:    "waiting for 3 servers, 2 are alive and verified (not verified: [s3])",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300"},
		},
		{
			name:       "a server's raft address holds another server's certificate",
			setup:      func(f *policyFixture) { f.certs(s2); f.verifier.certs[s3.Meta.RaftAddr] = "server/s2" },
			members:    []membership.Member{s1, s2, s3},
			wantErr:    "not verified: [s3]",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300"},
		},
		{
			name:       "nothing answers at a server's raft address",
			setup:      func(f *policyFixture) { f.certs(s3) },
			members:    []membership.Member{s1, s2, s3},
			wantErr:    "not verified: [s2]",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300"},
		},
		{
			name:     "asked and verified: bootstrap with the servers, sorted",
			setup:    func(f *policyFixture) { f.certs(s2, s3) },
			members:  []membership.Member{c1, s3, s1, s2},
			wantDone: true,
			wantEvents: []string{"verify s3 server at 10.0.0.3:7300", "verify s2 server at 10.0.0.2:7300",
				"probe 10.0.0.3:7400", "probe 10.0.0.2:7400", bootstrap3},
		},
		{
			name: "a member claiming the server role without proof does not hold the bootstrap up",
			setup: func(f *policyFixture) {
				f.certs(s2, s3)
				f.verifier.certs["10.0.0.66:7300"] = "client/rogue"
			},
			members:  []membership.Member{s1, s2, s3, member("rogue", membership.RoleServer, membership.StatusAlive, "10.0.0.66")},
			wantDone: true,
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"verify rogue server at 10.0.0.66:7300", "probe 10.0.0.2:7400", "probe 10.0.0.3:7400", bootstrap3},
		},
		{
			name:  "a raft address off the member's own address is never dialed",
			setup: func(f *policyFixture) { f.certs(s2, s3) },
			members: []membership.Member{s1, s2, s3, func() membership.Member {
				m := member("rogue", membership.RoleServer, membership.StatusAlive, "10.0.0.66")
				m.Meta.RaftAddr = "10.0.0.2:7300" // points the servers at someone else
				return m
			}()},
			wantDone: true,
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300",
				"probe 10.0.0.2:7400", "probe 10.0.0.3:7400", bootstrap3},
		},
		{
			name:       "a single server (BootstrapExpect 1) asks and verifies nobody",
			setup:      func(f *policyFixture) { f.policy.cfg.BootstrapExpect = 1 },
			members:    []membership.Member{s1, c1},
			wantDone:   true,
			wantEvents: []string{"bootstrap [s1@10.0.0.1:7300/voter=true]"},
		},
		{
			name:       "bootstrap fails",
			setup:      func(f *policyFixture) { f.certs(s2, s3); f.raft.bootstrapErr = errBoom },
			members:    []membership.Member{s1, s2, s3},
			wantErr:    "bootstrap raft: boom",
			wantEvents: []string{"verify s2 server at 10.0.0.2:7300", "verify s3 server at 10.0.0.3:7300", "probe 10.0.0.2:7400", "probe 10.0.0.3:7400", bootstrap3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPolicyFixture(nil)
			f.members.set(tt.members...)
			if tt.setup != nil {
				tt.setup(f)
			}
			done, err := f.policy.bootstrapOnce(context.Background())
			if done != tt.wantDone {
				t.Errorf("done = %t, want %t (err %v)", done, tt.wantDone, err)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			if got := f.rec.list(); !slices.Equal(got, tt.wantEvents) {
				t.Errorf("events:\n got %q\nwant %q", got, tt.wantEvents)
			}
			if !done && f.raft.HasState() {
				t.Error("raft was bootstrapped although Bootstrap goes on waiting")
			}
		})
	}
}

func TestBootstrapClusterExistsIsErrClusterExists(t *testing.T) {
	f := newPolicyFixture(nil)
	f.members.set(s1, s2, s3)
	f.certs(s2, s3)
	f.prober.states["10.0.0.2:7400"] = rpc.RaftState{HasState: true}
	if _, err := f.policy.bootstrapOnce(context.Background()); !errors.Is(err, errClusterExists) {
		t.Errorf("err = %v, want errClusterExists", err)
	}
}

func TestBootstrapLoop(t *testing.T) {
	t.Run("returns at once when bootstrapped", func(t *testing.T) {
		f := newPolicyFixture(nil)
		f.members.set(s1, s2, s3)
		f.certs(s2, s3)
		if err := f.policy.Bootstrap(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !f.raft.HasState() {
			t.Error("not bootstrapped")
		}
	})
	t.Run("returns ctx's error while it cannot", func(t *testing.T) {
		f := newPolicyFixture(nil)
		f.members.set(s1, s2)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := f.policy.Bootstrap(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if f.raft.HasState() {
			t.Error("bootstrapped below BootstrapExpect")
		}
	})
}

func TestReconcile(t *testing.T) {
	inRaft := func(ms ...membership.Member) []store.Server {
		var out []store.Server
		for _, m := range ms {
			out = append(out, store.Server{ID: m.Name, Address: m.Meta.RaftAddr, Voter: m.Meta.Role == server})
		}
		return out
	}
	node := func(name, status string) api.Node { return api.Node{Name: name, Status: status} }
	tests := []struct {
		name        string
		members     []membership.Member
		servers     []store.Server
		nodes       []api.Node
		revocations []string
		certs       func(*policyFixture)
		legacy      bool // PolicyConfig.LegacyClientRaft
		wantEvents  []string
		wantServers []store.Server // nil: as before plus what the events did
	}{
		{
			name:    "a client member is never added to raft: clients watch the servers",
			members: []membership.Member{s1, c1},
			servers: inRaft(s1),
			certs:   func(f *policyFixture) { f.certs(c1) },
		},
		{
			name:        "a client left in raft from when clients were non-voters is removed",
			members:     []membership.Member{s1, c1},
			servers:     inRaft(s1, c1),
			wantEvents:  []string{"remove c1"},
			wantServers: inRaft(s1),
		},
		{
			name:    "legacy client raft: a client member is added as a non-voter after verification",
			members: []membership.Member{s1, c1},
			servers: inRaft(s1),
			certs:   func(f *policyFixture) { f.certs(c1) },
			legacy:  true,
			wantEvents: []string{
				"verify c1 client at 10.0.0.11:7300", "add-nonvoter c1 10.0.0.11:7300",
			},
			wantServers: inRaft(s1, c1),
		},
		{
			name:    "legacy client raft: a client already a non-voter is left alone",
			members: []membership.Member{s1, c1},
			servers: inRaft(s1, c1),
			nodes:   []api.Node{node("c1", api.NodeReady)},
			legacy:  true,
		},
		{
			name:       "legacy client raft: a client with nothing at its raft address is not added",
			members:    []membership.Member{s1, c1},
			servers:    inRaft(s1),
			legacy:     true,
			wantEvents: []string{"verify c1 client at 10.0.0.11:7300"},
		},
		{
			name:        "legacy client raft: a left client is removed from raft",
			members:     []membership.Member{s1, with(c1, left)},
			servers:     inRaft(s1, c1),
			legacy:      true,
			wantEvents:  []string{"remove c1"},
			wantServers: inRaft(s1),
		},
		{
			name:    "a server member is added as a voter after verification",
			members: []membership.Member{s1, s2},
			servers: inRaft(s1),
			certs:   func(f *policyFixture) { f.certs(s2) },
			wantEvents: []string{
				"verify s2 server at 10.0.0.2:7300", "add-voter s2 10.0.0.2:7300",
			},
		},
		{
			name:    "a non-voter that is a server now is verified, then made a voter",
			members: []membership.Member{s1, s2},
			servers: append(inRaft(s1), store.Server{ID: "s2", Address: "10.0.0.2:7300"}),
			certs:   func(f *policyFixture) { f.certs(s2) },
			wantEvents: []string{
				"verify s2 server at 10.0.0.2:7300", "add-voter s2 10.0.0.2:7300",
			},
		},
		{
			name:    "a member that moved is verified at its new address",
			members: []membership.Member{s1, member("s2", server, alive, "10.0.0.22")},
			servers: inRaft(s1, s2),
			certs:   func(f *policyFixture) { f.certs(member("s2", server, alive, "10.0.0.22")) },
			wantEvents: []string{
				"verify s2 server at 10.0.0.22:7300", "add-voter s2 10.0.0.22:7300",
			},
		},
		{
			name:       "a member claiming the server role with a client certificate never votes",
			members:    []membership.Member{s1, member("c1", server, alive, "10.0.0.11")},
			servers:    inRaft(s1),
			certs:      func(f *policyFixture) { f.certs(c1) },
			wantEvents: []string{"verify c1 server at 10.0.0.11:7300"},
		},
		{
			name:       "a client non-voter claiming the server role is not promoted",
			members:    []membership.Member{s1, member("c1", server, alive, "10.0.0.11")},
			servers:    inRaft(s1, c1),
			certs:      func(f *policyFixture) { f.certs(c1) },
			wantEvents: []string{"verify c1 server at 10.0.0.11:7300"},
		},
		{
			name:       "a member pointing at another server's raft address is not added",
			members:    []membership.Member{s1, member("s3", server, alive, "10.0.0.2")},
			servers:    inRaft(s1, s2),
			certs:      func(f *policyFixture) { f.certs(s2) },
			wantEvents: []string{"verify s3 server at 10.0.0.2:7300"},
		},
		{
			name:       "a member with nothing at its raft address is not added",
			members:    []membership.Member{s1, member("s4", server, alive, "10.0.0.4")},
			servers:    inRaft(s1),
			wantEvents: []string{"verify s4 server at 10.0.0.4:7300"},
		},
		{
			name:    "members already in raft are left alone",
			members: []membership.Member{s1, s2, c1},
			servers: inRaft(s1, s2),
			nodes:   []api.Node{node("s1", api.NodeReady), node("s2", api.NodeReady), node("c1", api.NodeReady)},
		},
		{
			name:    "this node is neither verified nor added",
			members: []membership.Member{s1},
		},
		{
			name:    "node statuses follow membership",
			members: []membership.Member{s1, c1, with(c2, failed), member("c3", client, left, "10.0.0.13")},
			servers: inRaft(s1),
			nodes:   []api.Node{node("c1", api.NodeDown), node("c2", api.NodeReady), node("c3", api.NodeReady)},
			wantEvents: []string{
				"status c1 ready", "status c2 down", "status c3 left",
			},
		},
		{
			name:    "a status already recorded is not written again",
			members: []membership.Member{s1, with(c1, failed), with(c2, left)},
			servers: inRaft(s1),
			nodes:   []api.Node{node("c1", api.NodeDown), node("c2", api.NodeLeft)},
		},
		{
			name:        "a left server is removed from raft",
			members:     []membership.Member{s1, with(s2, left), s3},
			servers:     inRaft(s1, s2, s3),
			nodes:       []api.Node{node("s2", api.NodeReady)},
			wantEvents:  []string{"status s2 left", "remove s2"},
			wantServers: inRaft(s1, s3),
		},
		{
			name:        "a left client is removed from raft",
			members:     []membership.Member{s1, with(c1, left)},
			servers:     inRaft(s1, c1),
			wantEvents:  []string{"remove c1"},
			wantServers: inRaft(s1),
		},
		{
			name:    "this node is not removed when it leaves",
			members: []membership.Member{with(s1, left), s2},
			servers: inRaft(s1, s2),
		},
		{
			name:        "a node removed from the fleet is removed from raft and not added back",
			members:     []membership.Member{s1, c1, s2},
			servers:     inRaft(s1, c1, s2),
			revocations: []string{"c1", "s2"},
			certs:       func(f *policyFixture) { f.certs(c1, s2) },
			wantEvents:  []string{"remove c1", "remove s2"},
			wantServers: inRaft(s1),
		},
		{
			name:        "a removed node that is not in raft is not added",
			members:     []membership.Member{s1, c1},
			servers:     inRaft(s1),
			revocations: []string{"c1"},
			certs:       func(f *policyFixture) { f.certs(c1) },
		},
		{
			name:        "a removed server that registered again is a member again",
			members:     []membership.Member{s1, s2},
			servers:     inRaft(s1),
			nodes:       []api.Node{node("s2", api.NodeReady)},
			revocations: []string{"s2"},
			certs:       func(f *policyFixture) { f.certs(s2) },
			wantEvents:  []string{"verify s2 server at 10.0.0.2:7300", "add-voter s2 10.0.0.2:7300"},
		},
		{
			name:        "the leader does not remove itself for its own revocation",
			members:     []membership.Member{s1},
			servers:     inRaft(s1),
			revocations: []string{"s1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPolicyFixture(func(c *PolicyConfig) { c.LegacyClientRaft = tt.legacy })
			f.members.set(tt.members...)
			f.raft.servers = slices.Clone(tt.servers)
			for _, n := range tt.nodes {
				f.raft.nodes[n.Name] = n
			}
			for _, name := range tt.revocations {
				f.raft.revocations[name] = t0.Add(-time.Hour)
			}
			if tt.certs != nil {
				tt.certs(f)
			}
			_ = f.policy.reconcile(context.Background())
			got := f.rec.list()
			if len(tt.revocations) > 1 {
				slices.Sort(got) // revocations are a map: any order
			}
			if !slices.Equal(got, tt.wantEvents) {
				t.Errorf("events:\n got %q\nwant %q", got, tt.wantEvents)
			}
			if tt.wantServers != nil {
				if got, _ := f.raft.Servers(); !slices.Equal(got, tt.wantServers) {
					t.Errorf("raft servers = %+v, want %+v", got, tt.wantServers)
				}
			}
			// Nothing is ever added that was not verified just before.
			for i, e := range got {
				if name, ok := addedName(e); ok && (i == 0 || !strings.HasPrefix(got[i-1], "verify "+name+" ")) {
					t.Errorf("%q was not preceded by the member's verification", e)
				}
			}
		})
	}
}

func addedName(event string) (string, bool) {
	for _, p := range []string{"add-voter ", "add-nonvoter "} {
		if rest, ok := strings.CutPrefix(event, p); ok {
			name, _, _ := strings.Cut(rest, " ")
			return name, true
		}
	}
	return "", false
}

// TestReconcileRemoveGrace: a failed server keeps its vote for RemoveGrace.
func TestReconcileRemoveGrace(t *testing.T) {
	f := newPolicyFixture(nil)
	f.raft.servers = []store.Server{{ID: "s1", Address: "10.0.0.1:7300", Voter: true}, {ID: "s2", Address: "10.0.0.2:7300", Voter: true}, {ID: "s3", Address: "10.0.0.3:7300", Voter: true}}
	f.raft.nodes["s2"] = api.Node{Name: "s2", Status: api.NodeReady}
	ctx := context.Background()
	step := func(at time.Duration, want ...string) {
		t.Helper()
		f.rec.reset()
		f.clock.set(t0.Add(at))
		_ = f.policy.reconcile(ctx)
		if got := f.rec.list(); !slices.Equal(got, want) {
			t.Errorf("at +%s: events %q, want %q", at, got, want)
		}
	}
	f.members.set(s1, with(s2, failed), s3)
	step(0, "status s2 down")
	step(time.Minute)
	step(5 * time.Minute) // exactly the grace: still a member
	// s2's grace runs out; s3 fails too, later.
	f.members.set(s1, with(s2, failed), with(s3, failed))
	step(5*time.Minute+time.Second, "remove s2")
	// s3 recovers before its grace ends, then fails again: the count restarts.
	f.members.set(s1, with(s3, alive))
	step(8 * time.Minute)
	f.members.set(s1, with(s3, failed))
	step(9 * time.Minute)
	step(11 * time.Minute) // 6 min after s3 first failed, 2 after it failed again
	step(14*time.Minute+time.Second, "remove s3")
}

// TestReconcileVerifyTTL: a verified member is not verified again within
// VerifyTTL, even when adding it to raft keeps failing.
func TestReconcileVerifyTTL(t *testing.T) {
	f := newPolicyFixture(nil)
	f.members.set(s1, s2)
	f.raft.servers = []store.Server{{ID: "s1", Address: "10.0.0.1:7300", Voter: true}}
	f.raft.addErr = errBoom
	f.certs(s2)
	ctx := context.Background()
	verifies := func() int {
		n := 0
		for _, e := range f.rec.list() {
			if strings.HasPrefix(e, "verify ") {
				n++
			}
		}
		return n
	}
	if err := f.policy.reconcile(ctx); !errors.Is(err, errBoom) {
		t.Errorf("reconcile: %v, want the failed add", err)
	}
	f.clock.set(t0.Add(9 * time.Minute))
	_ = f.policy.reconcile(ctx)
	if n := verifies(); n != 1 {
		t.Errorf("verified %d times within VerifyTTL, want 1", n)
	}
	f.clock.set(t0.Add(11 * time.Minute))
	_ = f.policy.reconcile(ctx)
	if n := verifies(); n != 2 {
		t.Errorf("verified %d times after VerifyTTL, want 2", n)
	}
	// A different claim (another address) is verified on its own.
	f.members.set(s1, member("s2", server, alive, "10.0.0.22"))
	_ = f.policy.reconcile(ctx)
	if n := verifies(); n != 3 {
		t.Errorf("a new role claim was not verified (%d verifications)", n)
	}
}

// TestRunLeader: the leader loop adds members as membership events come.
func TestRunLeader(t *testing.T) {
	f := newPolicyFixture(nil)
	f.members.set(s1, s2)
	f.raft.servers = []store.Server{{ID: "s1", Address: "10.0.0.1:7300", Voter: true}}
	f.certs(s2, c1)
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan membership.Event)
	done := make(chan struct{}, 2)
	go func() { f.policy.Pump(ctx, events); done <- struct{}{} }()
	go func() { f.policy.RunLeader(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	inRaft := func(id string) func() bool {
		return func() bool {
			servers, _ := f.raft.Servers()
			return slices.ContainsFunc(servers, func(s store.Server) bool { return s.ID == id })
		}
	}
	eventually(t, "s2 in raft", inRaft("s2"))
	f.certs(s3)
	f.members.set(s1, s2, s3, c1)
	events <- membership.Event{Type: membership.EventJoin, Member: s3}
	eventually(t, "s3 in raft", inRaft("s3"))
	if inRaft("c1")() {
		t.Error("a client was added to raft")
	}
}

func TestNewPolicyDefaults(t *testing.T) {
	p := NewPolicy(PolicyConfig{})
	if p.cfg.RemoveGrace != 5*time.Minute || p.cfg.VerifyTTL != 10*time.Minute || p.cfg.Now == nil || p.cfg.Logger == nil {
		t.Errorf("defaults not applied: %+v", p.cfg)
	}
}
