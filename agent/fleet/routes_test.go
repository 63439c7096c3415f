package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-io/flotilla/agent/routes"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

var (
	clusterConfig = state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}
	selfAddr      = netip.MustParseAddr("10.0.0.1")
)

func route(cidr, via string) routes.Route {
	return routes.Route{PodCIDR: netip.MustParsePrefix(cidr), Via: netip.MustParseAddr(via)}
}

func rnode(name, addr, cidr string) api.Node {
	return api.Node{Name: name, Address: addr, PodCIDR: cidr, Status: api.NodeReady}
}

func TestWantedRoutes(t *testing.T) {
	self := rnode("n0", "10.0.0.1", "10.244.0.0/24")
	good := rnode("n1", "10.0.0.2", "10.244.1.0/24")
	tests := []struct {
		name  string
		nodes []api.Node
		cc    state.ClusterConfig
		want  []routes.Route
		// wantErrs: one substring per refusal, in order.
		wantErrs []string
	}{
		{
			name:  "good records become routes; none to this node",
			nodes: []api.Node{self, good, rnode("n2", "10.0.0.3", "10.244.2.0/24"), rnode("n3", "192.168.7.3", "10.244.3.0/24")},
			want:  []routes.Route{route("10.244.1.0/24", "10.0.0.2"), route("10.244.2.0/24", "10.0.0.3"), route("10.244.3.0/24", "192.168.7.3")},
		},
		{
			name:  "a node without a pod range yet gets none; one that left keeps its route (its pods stay 5 min; a restart must not cut them off)",
			nodes: []api.Node{self, good, rnode("n2", "10.0.0.3", ""), {Name: "n3", Address: "10.0.0.4", PodCIDR: "10.244.3.0/24", Status: api.NodeLeft}},
			want:  []routes.Route{route("10.244.1.0/24", "10.0.0.2"), route("10.244.3.0/24", "10.0.0.4")},
		},
		{
			name:  "a down node keeps its route",
			nodes: []api.Node{{Name: "n1", Address: "10.0.0.2", PodCIDR: "10.244.1.0/24", Status: api.NodeDown}},
			want:  []routes.Route{route("10.244.1.0/24", "10.0.0.2")},
		},
		{
			name:     "a pod range outside the cluster's",
			nodes:    []api.Node{good, rnode("bad", "10.0.0.9", "10.245.1.0/24")},
			want:     []routes.Route{route("10.244.1.0/24", "10.0.0.2")},
			wantErrs: []string{"node bad: pod range 10.245.1.0/24 is outside the cluster's pod range 10.244.0.0/16"},
		},
		{
			name:     "a pod range covering the whole cluster range",
			nodes:    []api.Node{rnode("bad", "10.0.0.9", "10.244.0.0/16")},
			wantErrs: []string{"node bad: pod range 10.244.0.0/16 is not a /24"},
		},
		{
			name:     "a pod range of the wrong size",
			nodes:    []api.Node{rnode("bad", "10.0.0.9", "10.244.1.0/25")},
			wantErrs: []string{"node bad: pod range 10.244.1.0/25 is not a /24, the cluster's node range size"},
		},
		{
			name:     "a pod range with host bits",
			nodes:    []api.Node{rnode("bad", "10.0.0.9", "10.244.1.1/24")},
			wantErrs: []string{"node bad: pod range 10.244.1.1/24 has host bits set"},
		},
		{
			name:     "an IPv6 pod range in an IPv4 cluster",
			nodes:    []api.Node{rnode("bad", "10.0.0.9", "fd00::/24")},
			wantErrs: []string{"node bad: pod range fd00::/24 is outside the cluster's pod range"},
		},
		{
			name:     "a pod range that does not parse",
			nodes:    []api.Node{rnode("bad", "10.0.0.9", "10.244.1.0")},
			wantErrs: []string{"node bad: "},
		},
		{
			name:     "a pod range claimed by two nodes: neither is routed",
			nodes:    []api.Node{good, rnode("n2", "10.0.0.3", "10.244.2.0/24"), rnode("thief", "10.0.0.9", "10.244.1.0/24")},
			want:     []routes.Route{route("10.244.2.0/24", "10.0.0.3")},
			wantErrs: []string{"pod range 10.244.1.0/24 is claimed by nodes [n1 thief]", "pod range 10.244.1.0/24 is claimed by nodes [n1 thief]"},
		},
		{
			name:     "a node claiming this node's range",
			nodes:    []api.Node{self, rnode("thief", "10.0.0.9", "10.244.0.0/24")},
			wantErrs: []string{"pod range 10.244.0.0/24 is claimed by nodes [n0 thief]"},
		},
		{
			name:     "a gateway that is this node's address",
			nodes:    []api.Node{rnode("bad", "10.0.0.1", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 10.0.0.1 is this node's"},
		},
		{
			name:     "a gateway that is this node's address, IPv4-mapped",
			nodes:    []api.Node{rnode("bad", "::ffff:10.0.0.1", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 10.0.0.1 is this node's"},
		},
		{
			name:     "a loopback gateway",
			nodes:    []api.Node{rnode("bad", "127.0.0.1", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 127.0.0.1 is not a unicast address a node can have"},
		},
		{
			name:     "the cloud metadata address (link-local)",
			nodes:    []api.Node{rnode("bad", "169.254.169.254", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 169.254.169.254 is not a unicast address a node can have"},
		},
		{
			name:     "the cloud metadata address, IPv4-mapped",
			nodes:    []api.Node{rnode("bad", "::ffff:169.254.169.254", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 169.254.169.254 is not a unicast address"},
		},
		{
			name:     "an IPv6 link-local gateway",
			nodes:    []api.Node{rnode("bad", "fe80::1", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address fe80::1 is not a unicast address"},
		},
		{
			name:     "a multicast gateway",
			nodes:    []api.Node{rnode("bad", "224.0.0.1", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 224.0.0.1 is not a unicast address"},
		},
		{
			name:     "the broadcast address",
			nodes:    []api.Node{rnode("bad", "255.255.255.255", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 255.255.255.255 is not a unicast address"},
		},
		{
			name:     "the unspecified address",
			nodes:    []api.Node{rnode("bad", "0.0.0.0", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 0.0.0.0 is not a unicast address"},
		},
		{
			name:     "a gateway inside the pod range",
			nodes:    []api.Node{rnode("bad", "10.244.1.7", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 10.244.1.7 is inside the cluster's pod or service range"},
		},
		{
			name:     "a gateway inside the pod range, IPv4-mapped",
			nodes:    []api.Node{rnode("bad", "::ffff:10.244.1.7", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 10.244.1.7 is inside the cluster's pod or service range"},
		},
		{
			name:     "a gateway inside the service range",
			nodes:    []api.Node{rnode("bad", "10.96.0.10", "10.244.5.0/24")},
			wantErrs: []string{"node bad: address 10.96.0.10 is inside the cluster's pod or service range"},
		},
		{
			name:  "without a service range, only the pod range is off limits",
			cc:    state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24},
			nodes: []api.Node{rnode("n5", "10.96.0.10", "10.244.5.0/24")},
			want:  []routes.Route{route("10.244.5.0/24", "10.96.0.10")},
		},
		{
			name:     "a gateway with a zone",
			nodes:    []api.Node{rnode("bad", "fd00::1%eth0", "10.244.5.0/24")},
			wantErrs: []string{`node bad: address "fd00::1%eth0" has a zone`},
		},
		{
			name:     "a gateway that does not parse",
			nodes:    []api.Node{rnode("bad", "n1.example", "10.244.5.0/24")},
			wantErrs: []string{`node bad: address "n1.example"`},
		},
		{
			name:  "an IPv4-mapped gateway is routed as the IPv4 address",
			nodes: []api.Node{rnode("n5", "::ffff:10.0.0.5", "10.244.5.0/24")},
			want:  []routes.Route{route("10.244.5.0/24", "10.0.0.5")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := tt.cc
			if cc == (state.ClusterConfig{}) {
				cc = clusterConfig
			}
			got, errs := WantedRoutes("n0", selfAddr, tt.nodes, cc)
			if !slices.Equal(got, tt.want) {
				t.Errorf("routes = %v, want %v", got, tt.want)
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("refusals = %v, want %d: %q", errs, len(tt.wantErrs), tt.wantErrs)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.wantErrs[i]) {
					t.Errorf("refusal %d = %q, want %q", i, err, tt.wantErrs[i])
				}
			}
		})
	}
}

// fakeRouteSource is the state route sync reads.
type fakeRouteSource struct {
	mu      sync.Mutex
	nodes   []api.Node
	cc      *state.ClusterConfig
	changed chan struct{}
}

var _ RouteSource = (*fakeRouteSource)(nil)

func (f *fakeRouteSource) Nodes() []api.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes)
}

func (f *fakeRouteSource) ClusterConfig() (state.ClusterConfig, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cc == nil {
		return state.ClusterConfig{}, false
	}
	return *f.cc, true
}

func (f *fakeRouteSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// update changes the state and wakes whoever waits on Changed.
func (f *fakeRouteSource) update(cc *state.ClusterConfig, nodes ...api.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cc, f.nodes = cc, nodes
	close(f.changed)
	f.changed = make(chan struct{})
}

// fakeRouteSyncer records what it was asked to program.
type fakeRouteSyncer struct {
	mu    sync.Mutex
	syncs [][]routes.Route
	err   error
}

var _ RouteSyncer = (*fakeRouteSyncer)(nil)

func (f *fakeRouteSyncer) Sync(_ context.Context, want []routes.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs = append(f.syncs, slices.Clone(want))
	return f.err
}

func (f *fakeRouteSyncer) list() [][]routes.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.syncs)
}

func TestSyncRoutes(t *testing.T) {
	src := &fakeRouteSource{changed: make(chan struct{})}
	rm := &fakeRouteSyncer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		SyncRoutes(ctx, "n0", selfAddr, src, rm, slog.New(slog.DiscardHandler))
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// No cluster config yet: nothing to sync.
	cc := clusterConfig
	src.update(&cc, rnode("n0", "10.0.0.1", "10.244.0.0/24"), rnode("n1", "10.0.0.2", "10.244.1.0/24"), rnode("bad", "169.254.169.254", "10.244.9.0/24"))
	eventually(t, "the first sync", func() bool { return len(rm.list()) == 1 })
	if got, want := fmt.Sprint(rm.list()[0]), fmt.Sprint([]routes.Route{route("10.244.1.0/24", "10.0.0.2")}); got != want {
		t.Errorf("synced %s, want %s", got, want)
	}
	src.update(&cc, rnode("n0", "10.0.0.1", "10.244.0.0/24"), rnode("n1", "10.0.0.2", "10.244.1.0/24"), rnode("n2", "10.0.0.3", "10.244.2.0/24"))
	eventually(t, "a sync with n2's route", func() bool { return len(rm.list()) == 2 })
	if got, want := fmt.Sprint(rm.list()[1]), fmt.Sprint([]routes.Route{route("10.244.1.0/24", "10.0.0.2"), route("10.244.2.0/24", "10.0.0.3")}); got != want {
		t.Errorf("synced %s, want %s", got, want)
	}
	// A change that does not change the routes does not sync again; the
	// next one that does is the third sync.
	src.update(&cc, rnode("n0", "10.0.0.1", "10.244.0.0/24"), rnode("n1", "10.0.0.2", "10.244.1.0/24"), rnode("n2", "10.0.0.3", "10.244.2.0/24"), rnode("n3", "10.0.0.4", ""))
	src.update(&cc, rnode("n0", "10.0.0.1", "10.244.0.0/24"))
	eventually(t, "a sync without routes", func() bool {
		s := rm.list()
		return len(s) >= 3 && len(s[len(s)-1]) == 0
	})
	if n := len(rm.list()); n != 3 {
		t.Errorf("%d syncs, want 3: an unchanged route set was synced again", n)
	}
}
