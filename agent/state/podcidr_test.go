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
		cmd      cmd
		wantCIDR string // of the node the step registers ("" for other commands)
		wantErr  error
		errText  string
	}
	node := func(name string) api.Node {
		return api.Node{Name: name, Address: "192.0.2.1", CPUMillis: 1000, Status: NodeReady}
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
			{cmd: registerN(api.Node{Name: "a", PodCIDR: "10.244.9.0/24", Address: "192.0.2.99", CPUMillis: 8000, Status: NodeReady, Labels: map[string]string{"z": "1"}}), wantCIDR: "10.244.0.0/24"},
		}},
		{"a range asked for is ignored", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(api.Node{Name: "a", PodCIDR: "10.244.7.0/24"}), wantCIDR: "10.244.0.0/24"},
		}},
		{"ranges of upserted nodes count as taken, whatever their size", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: upsertN(api.Node{Name: "dev", PodCIDR: "10.244.0.0/23"})},
			{cmd: upsertN(api.Node{Name: "small", PodCIDR: "10.244.2.128/25"})},
			{cmd: upsertN(api.Node{Name: "outside", PodCIDR: "10.88.0.0/16"})},
			{cmd: upsertN(api.Node{Name: "garbage", PodCIDR: "not-a-cidr"})},
			{cmd: registerN(node("a")), wantCIDR: "10.244.3.0/24"},
		}},
		{"a gap left by an upserted node is filled first", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: upsertN(api.Node{Name: "x", PodCIDR: "10.244.1.0/24"})},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.2.0/24"},
		}},
		{"upserting the range away frees it", []step{
			{cmd: clusterC("10.244.0.0/16", 24)},
			{cmd: registerN(node("a")), wantCIDR: "10.244.0.0/24"},
			{cmd: registerN(node("b")), wantCIDR: "10.244.1.0/24"},
			{cmd: upsertN(api.Node{Name: "a"})}, // dev tooling cleared it
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
			{cmd: upsertN(api.Node{Name: "greedy", PodCIDR: "10.0.0.0/8"})},
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
			f := newFSM()
			for i, st := range tt.steps {
				index := f.index + 1
				resp := applyAt(t, f, index, st.cmd)
				err, _ := resp.(error)
				if st.wantErr != nil || err != nil {
					if !errors.Is(err, st.wantErr) || !strings.Contains(fmt.Sprint(err), st.errText) {
						t.Fatalf("step %d (%s): error %v, want %v containing %q", i, st.cmd.t, err, st.wantErr, st.errText)
					}
					continue
				}
				if st.wantCIDR == "" {
					continue
				}
				req := st.cmd.body.(RegisterNodeRequest)
				got, ok := resp.(api.Node)
				if !ok || got.PodCIDR != st.wantCIDR || got.ModifyIndex != index {
					t.Fatalf("step %d: answer %+v; want pod range %s at index %d", i, resp, st.wantCIDR, index)
				}
				stored, _ := f.node(req.Node.Name)
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
	f := newFSM()
	applyAll(t, f, clusterC("10.0.0.0/16", 24))
	seen := map[string]bool{}
	for i := range 256 {
		resp := applyAt(t, f, f.index+1, registerN(api.Node{Name: fmt.Sprintf("n%03d", i)}))
		n, ok := resp.(api.Node)
		if !ok {
			t.Fatalf("node %d: %v", i, resp)
		}
		if want := fmt.Sprintf("10.0.%d.0/24", i); n.PodCIDR != want || seen[n.PodCIDR] {
			t.Fatalf("node %d got %s, want %s", i, n.PodCIDR, want)
		}
		seen[n.PodCIDR] = true
	}
	if err, _ := applyAt(t, f, f.index+1, registerN(api.Node{Name: "one-too-many"})).(error); !errors.Is(err, ErrConflict) {
		t.Fatalf("257th node: %v, want exhaustion", err)
	}
}

func TestFSMSetNodeStatus(t *testing.T) {
	f := newFSM()
	applyAll(t, f, upsertN(api.Node{Name: "a", Status: NodeReady, CPUMillis: 5}))
	applyAll(t, f, nodeStatus("a", NodeDown))
	if n, _ := f.node("a"); n.Status != NodeDown || n.ModifyIndex != 2 || n.CPUMillis != 5 {
		t.Errorf("after down: %+v", n)
	}
	applyAll(t, f, nodeStatus("a", NodeDown)) // unchanged: keeps its index
	if n, _ := f.node("a"); n.ModifyIndex != 2 {
		t.Errorf("a no-op status change moved the index to %d", n.ModifyIndex)
	}
	if err, _ := applyAt(t, f, f.index+1, nodeStatus("missing", NodeLeft)).(error); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of a missing node: %v", err)
	}
}

func TestFSMClusterConfig(t *testing.T) {
	f := newFSM()
	if _, ok := f.getClusterConfig(); ok {
		t.Fatal("a new FSM has a cluster config")
	}
	// An invalid config can only come from a bad entry (the store checks
	// first); the FSM refuses it, the same way on every replica.
	if err, _ := applyAt(t, f, 1, clusterC("10.244.0.0/16", 8)).(error); err == nil {
		t.Error("applied an invalid config")
	}
	applyAll(t, f, clusterC("10.244.0.0/16", 24))
	applyAll(t, f, cmd{SetClusterConfigType, SetClusterConfigRequest{ClusterConfig{PodCIDR: "10.1.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}}})
	if got, ok := f.getClusterConfig(); !ok || got != (ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24}) {
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
		err := tt.cc.validate()
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
	f := newFSM()
	applyAll(t, f, clusterC("10.244.0.0/16", 24))
	if err := f.Restore(readCloser{bytes.NewReader(v1)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.getClusterConfig(); ok || f.index != 7 {
		t.Errorf("after restoring a version 1 snapshot: cluster config set %v, index %d", ok, f.index)
	}
	if n, ok := f.node("n1"); !ok || n.PodCIDR != "10.88.0.0/24" {
		t.Errorf("node %+v, %v", n, ok)
	}
}
