package svcproxy

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"testing"
)

// nullApplier loads nothing and reads back empty tables: what a Sync costs
// in this process, without iptables.
type nullApplier struct{ restores int }

func (a *nullApplier) Restore(context.Context, []byte) error { a.restores++; return nil }
func (a *nullApplier) Save(_ context.Context, table string) ([]byte, error) {
	return []byte("*" + table + "\nCOMMIT\n"), nil
}

// BenchmarkSyncEndpointChange is the CPU time of a Sync at 10,000 Service
// ports × 10 endpoints after one endpoint changed: rendering (from the
// cache but for that chain), comparing and planning; iptables-restore not
// included.
func BenchmarkSyncEndpointChange(b *testing.B) {
	cfg := DefaultConfig()
	cfg.ClusterCIDR = netip.MustParsePrefix("10.128.0.0/9")
	cfg.NodePodCIDR = netip.MustParsePrefix("10.128.0.0/25")
	app := &nullApplier{}
	s, err := NewSyncer(cfg, app)
	if err != nil {
		b.Fatal(err)
	}
	st := benchState(10000)
	if _, err := s.Sync(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	round := 0
	for b.Loop() {
		round++
		changeEndpoint(st, 20+round%5000, round)
		stats, err := s.Sync(context.Background(), st)
		if err != nil || stats.ChainsWritten != 1 {
			b.Fatalf("%+v %v", stats, err)
		}
	}
}

const benchEndpoints = 10

// benchState is n Services ns/svc-<i> on 10.96.0.0/12 port 80, each with
// 10 endpoints on 10.128.0.0/9 port 8080; the first 128 endpoint addresses
// are in the node's pod range.
func benchState(n int) State {
	st := State{Endpoints: make(map[ServicePortKey][]EndpointAddr, n)}
	for i := range n {
		name := "svc-" + strconv.Itoa(i)
		st.Services = append(st.Services, Service{Namespace: "ns", Name: name,
			ClusterIP: netip.AddrFrom4([4]byte{10, byte(96 + i>>16), byte(i >> 8), byte(i)}),
			Ports:     []ServicePort{{Protocol: "tcp", Port: 80}}})
		eps := make([]EndpointAddr, benchEndpoints)
		for j := range eps {
			k := i*benchEndpoints + j
			eps[j] = EndpointAddr{IP: netip.AddrFrom4([4]byte{10, byte(128 + k>>16), byte(k >> 8), byte(k)}), Port: 8080}
		}
		st.Endpoints[key("ns", name, "")] = eps
	}
	return st
}

// changeEndpoint replaces the last endpoint of Service i with a new
// address, in place; it returns the new endpoint.
func changeEndpoint(st State, i, round int) EndpointAddr {
	k := key("ns", "svc-"+strconv.Itoa(i), "")
	eps := slices.Clone(st.Endpoints[k])
	eps[len(eps)-1] = EndpointAddr{IP: netip.AddrFrom4([4]byte{10, 255, byte(round), byte(i)}), Port: 8080}
	st.Endpoints[k] = eps
	return eps[len(eps)-1]
}
