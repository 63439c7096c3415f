package state

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func TestFSMRegisterNode(t *testing.T) {
	type step struct {
		cmd      Command
		wantCIDR string // of the node the step registers ("" for other commands)
		wantErr  error
		errText  string
	}
	node := func(name string) api.Node {
		return api.Node{Name: name, Address: "192.0.2.1", CPUMillis: 1000, Status: api.NodeReady}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"lowest free block, in order", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.1.0/24"},
			{cmd: registerN(node("c")), wantCIDR: "10.244.2.0/24"},
		}},
		{"registration before the cluster config", []step{
			{cmd: registerN(node("a")), wantErr: ErrConflict, errText: "not set yet"},
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
		}},
		{"re-registration keeps the range and updates the rest", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.1.0/24"},
			{cmd: registerN(api.Node{Name: "a", PodCIDR: "10.244.9.0/24", Address: "192.0.2.99", CPUMillis: 8000, Status: api.NodeReady, Labels: map[string]string{"z": "1"}}), wantCIDR: "10.244.0.0/24"},
		}},
		{"a range asked for is ignored", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(withCIDR("a", "10.244.7.0/24")), wantCIDR: "10.244.0.0/24"},
		}},
		{"ranges of upserted nodes count as taken, whatever their size", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: upsertN(withCIDR("dev", "10.244.0.0/23"))},
			{cmd: upsertN(withCIDR("small", "10.244.2.128/25"))},
			{cmd: upsertN(withCIDR("outside", "10.88.0.0/16"))},
			{cmd: upsertN(withCIDR("garbage", "not-a-cidr")), wantErr: ErrInvalid, errText: "skipped"}, // never in the log; see TestFSMAllocationIgnoresUnparsableRanges
			{cmd: registerN(node("a")), wantCIDR: "10.244.3.0/24"},
		}},
		{"a gap left by an upserted node is filled first", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: upsertN(withCIDR("x", "10.244.1.0/24"))},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.2.0/24"},
		}},
		{"upserting the range away frees it", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.1.0/24"},
			{cmd: upsertN(withCIDR("a", ""))}, // dev tooling cleared it
			{cmd: registerN(node("c")), wantCIDR: "10.244.0.0/24"},
		}},
		{"exhaustion", []step{
			{cmd: clusterC("10.244.0.0/22", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.1.0/24"},
			{cmd: registerN(node("c")), wantCIDR: "10.244.2.0/24"},
			{cmd: registerN(node("d")), wantCIDR: "10.244.3.0/24"},
			{cmd: registerN(node("e")), wantErr: ErrConflict, errText: "10.244.0.0/22 is exhausted, all 4 /24 node ranges are taken"},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"}, // a known node still re-registers
		}},
		{"a range covering the cluster's takes it all", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: upsertN(withCIDR("greedy", "10.0.0.0/8"))},
			{cmd: registerN(node("a")), wantErr: ErrConflict, errText: "exhausted"},
		}},
		{"odd sizes", []step{
			{cmd: clusterC("10.244.0.0/20", 26)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/26"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.0.64/26"},
			{cmd: registerN(node("c")), wantCIDR: "10.244.0.128/26"},
			{cmd: registerN(node("d")), wantCIDR: "10.244.0.192/26"},
			{cmd: registerN(node("e")), wantCIDR: "10.244.1.0/26"},
		}},
		{"IPv6", []step{
			{cmd: clusterC("fd00:10:244::/56", 64)},
			{cmd: registerN(node("a")), wantCIDR: "fd00:10:244::/64"},
			{cmd: registerN(node("b")), wantCIDR: "fd00:10:244:1::/64"},
		}},
		{"the first cluster config wins", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: clusterC("10.100.0.0/16", 26)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM(nil)
			for i, st := range tt.steps {
				index := f.Index() + 1
				resp := applyAt(t, f, index, st.cmd)
				err, _ := resp.(error)
				if st.wantErr != nil || err != nil {
					if !errors.Is(err, st.wantErr) || !strings.Contains(fmt.Sprint(err), st.errText) {
						t.Fatalf("step %d (%s): error %v, want %v containing %q", i, st.cmd.Type(), err, st.wantErr, st.errText)
					}
					continue
				}
				if st.wantCIDR == "" {
					continue
				}
				req := st.cmd.(*RegisterNode)
				got, ok := resp.(api.Node)
				if !ok || got.PodCIDR != st.wantCIDR || got.ModifyIndex != index {
					t.Fatalf("step %d: answer %+v; want pod range %s at index %d", i, resp, st.wantCIDR, index)
				}
				stored, _ := f.Node(req.Node.Name)
				if !reflect.DeepEqual(stored, got) {
					t.Errorf("step %d: stored %+v, answered %+v", i, stored, got)
				}
				want := req.Node
				want.PodCIDR, want.ModifyIndex = st.wantCIDR, index
				if !reflect.DeepEqual(stored, want) {
					t.Errorf("step %d: stored %+v, want the registered fields %+v", i, stored, want)
				}
			}
		})
	}
}

// TestFSMRegisterNodeFillsTheRange registers until exhaustion: every block
// is given exactly once, in order.
func TestFSMRegisterNodeFillsTheRange(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, clusterC("10.0.0.0/16", 24))
	seen := map[string]bool{}
	for i := range 256 {
		resp := applyAt(t, f, f.Index()+1, registerN(nodeRec(fmt.Sprintf("n%03d", i))))
		n, ok := resp.(api.Node)
		if !ok {
			t.Fatalf("node %d: %v", i, resp)
		}
		if want := fmt.Sprintf("10.0.%d.0/24", i); n.PodCIDR != want || seen[n.PodCIDR] {
			t.Fatalf("node %d got %s, want %s", i, n.PodCIDR, want)
		}
		seen[n.PodCIDR] = true
	}
	if err, _ := applyAt(t, f, f.Index()+1, registerN(nodeRec("one-too-many"))).(error); !errors.Is(err, ErrConflict) {
		t.Fatalf("257th node: %v, want exhaustion", err)
	}
}

func TestFSMSetNodeStatus(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, upsertN(func() api.Node { n := nodeRec("a"); n.CPUMillis = 5; return n }()))
	applyAll(t, f, nodeStatus("a", api.NodeDown))
	if n, _ := f.Node("a"); n.Status != api.NodeDown || n.ModifyIndex != 2 || n.CPUMillis != 5 {
		t.Errorf("after down: %+v", n)
	}
	applyAll(t, f, nodeStatus("a", api.NodeDown)) // unchanged: keeps its index
	if n, _ := f.Node("a"); n.ModifyIndex != 2 {
		t.Errorf("a no-op status change moved the index to %d", n.ModifyIndex)
	}
	if err, _ := applyAt(t, f, f.Index()+1, nodeStatus("missing", api.NodeLeft)).(error); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of a missing node: %v", err)
	}
}

func TestFSMClusterConfig(t *testing.T) {
	f := NewFSM(nil)
	if _, ok := f.ClusterConfig(); ok {
		t.Fatal("a new FSM has a cluster config")
	}
	// An invalid config can only come from a bad entry (the store checks
	// first); the FSM refuses it, the same way on every replica.
	if err, _ := applyAt(t, f, 1, clusterC("10.244.0.0/16", 8)).(error); err == nil {
		t.Error("applied an invalid config")
	}
	applyAll(t, f, clusterC("10.244.0.0/16", 24))
	applyAll(t, f, &SetClusterConfig{Config: ClusterConfig{PodCIDR: "10.1.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}})
	if got, ok := f.ClusterConfig(); !ok || got != (ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24}) {
		t.Errorf("cluster config %+v, %v; want the first one", got, ok)
	}
}

func TestClusterConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cc   ClusterConfig
		want string // "" for valid
	}{
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}, ""},
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 16}, ""}, // a single node range
		{ClusterConfig{PodCIDR: "fd00::/48", NodeMaskBits: 64}, ""},
		{ClusterConfig{PodCIDR: "", NodeMaskBits: 24}, "not a CIDR"},
		{ClusterConfig{PodCIDR: "10.244.1.0/16", NodeMaskBits: 24}, "did you mean 10.244.0.0/16"},
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 8}, "shorter than"},
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 31}, "no room for pods"},
		{ClusterConfig{PodCIDR: "10.244.0.0/16"}, "shorter than"},
		{ClusterConfig{PodCIDR: "fd00::/16", NodeMaskBits: 64}, "more than 2^32"},
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.0.0.0/8"}, "overlaps"},
		{ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "x"}, "ServiceCIDR"},
	} {
		err := tt.cc.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: %v, want %q", tt.cc, err, tt.want)
		}
	}
}

func TestBlockIndexRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		base string
		mask int
	}{{"10.244.0.0/16", 24}, {"10.0.0.0/8", 26}, {"fd00:1::/32", 64}, {"192.168.4.0/22", 22}} {
		base := netip.MustParsePrefix(tt.base)
		n := uint64(1) << (tt.mask - base.Bits())
		for _, i := range []uint64{0, min(1, n-1), n / 2, n - 1} {
			p := blockPrefix(base, tt.mask, i)
			if !base.Contains(p.Addr()) || p.Bits() != tt.mask || p != p.Masked() {
				t.Errorf("%s block %d = %s: not a /%d inside", base, i, p, tt.mask)
			}
			if got := blockIndex(base, tt.mask, p.Addr()); got != i {
				t.Errorf("%s: blockIndex(%s) = %d, want %d", base, p, got, i)
			}
		}
	}
}

func TestFSMRestoresVersion1Snapshots(t *testing.T) {
	// A snapshot from before the cluster config: it restores, and clears a
	// config the FSM had.
	v1 := []byte(`{"version":1,"index":7,"deployments":[],"pods":[],"nodes":[{"name":"n1","pod_cidr":"10.88.0.0/24","status":"ready"}]}`)
	f := NewFSM(nil)
	applyAll(t, f, clusterC("10.244.0.0/16", 24))
	if err := f.Restore(readCloser{bytes.NewReader(v1)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ClusterConfig(); ok || f.Index() != 7 {
		t.Errorf("after restoring a version 1 snapshot: cluster config set %v, index %d", ok, f.Index())
	}
	if n, ok := f.Node("n1"); !ok || n.PodCIDR != "10.88.0.0/24" {
		t.Errorf("node %+v, %v", n, ok)
	}
}

// withCIDR is a valid node record with a pod range (none for "").
func withCIDR(name, podCIDR string) api.Node {
	n := nodeRec(name)
	n.PodCIDR = podCIDR
	return n
}

// TestFSMAllocationIgnoresUnparsableRanges: a pod range that does not
// parse cannot enter through an entry any more (validation refuses it), but
// may come from a snapshot of an older agent; allocation skips it.
func TestFSMAllocationIgnoresUnparsableRanges(t *testing.T) {
	snap := `{"version":2,"index":4,"deployments":[],"pods":[],"cluster_config":{"pod_cidr":"10.244.0.0/16","node_mask_bits":24},` +
		`"nodes":[{"name":"garbage","address":"192.0.2.1","pod_cidr":"not-a-cidr"},{"name":"b","address":"192.0.2.2","pod_cidr":"10.244.0.0/24"}]}`
	f := NewFSM(nil)
	if err := f.Restore(readCloser{strings.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	if n, ok := applyAt(t, f, 5, registerN(nodeRec("a"))).(api.Node); !ok || n.PodCIDR != "10.244.1.0/24" {
		t.Errorf("registered %+v", n)
	}
}

func TestClusterConfigNodeRange(t *testing.T) {
	v4 := ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24}
	v6 := ClusterConfig{PodCIDR: "fd00:10:244::/56", NodeMaskBits: 64}
	for _, tt := range []struct {
		cc     ClusterConfig
		prefix string
		want   string // "" for a valid node range
	}{
		{v4, "10.244.3.0/24", ""},
		{v4, "10.244.255.0/24", ""},
		{v4, "10.244.3.0/25", "not a /24"},
		{v4, "10.244.0.0/16", "not a /24"},
		{v4, "10.244.3.1/24", "host bits"},
		{v4, "10.245.0.0/24", "outside"},
		{v4, "::ffff:10.244.3.0/120", "not a /24"},
		{v4, "", "no pod range"},
		{v6, "fd00:10:244:ff::/64", ""},
		{v6, "fd00:10:245::/64", "outside"},
		{v6, "10.244.3.0/24", "not a /64"},
		{ClusterConfig{PodCIDR: "garbage", NodeMaskBits: 24}, "10.244.3.0/24", "does not parse"},
	} {
		var p netip.Prefix
		if tt.prefix != "" {
			p = netip.MustParsePrefix(tt.prefix)
		}
		err := tt.cc.NodeRange(p)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v.NodeRange(%s) = %v, want %q", tt.cc, tt.prefix, err, tt.want)
		}
	}
}
