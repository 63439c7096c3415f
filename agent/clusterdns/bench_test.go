package clusterdns

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// benchView is n services, svc-<i>.bench.svc.cluster.local., each with a
// named port.
func benchView(n int) []Service {
	services := make([]Service, n)
	for i := range services {
		services[i] = Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Ports:     []Port{{Name: "http", Port: 80}}}
	}
	return services
}

// BenchmarkServe measures queries/s over loopback UDP: parallel clients, each
// with its own socket and one query in flight, asking A records of 1,000
// services.
func BenchmarkServe(b *testing.B) {
	const services = 1000
	s := newTestServer(b, nil)
	if _, err := s.Update(benchView(services), nil); err != nil {
		b.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	var next atomic.Uint64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		buf := make([]byte, 1500)
		for pb.Next() {
			i := next.Add(1)
			m := question(fmt.Sprintf("svc-%d.bench.svc.cluster.local.", i%services), dns.TypeA)
			m.Id = uint16(i)
			q, _ := m.Pack()
			if _, err := conn.Write(q); err != nil {
				b.Error(err)
				return
			}
			n, err := conn.Read(buf)
			if err != nil || n < headerLen || buf[0] != q[0] || buf[1] != q[1] || buf[3]&0xF != 0 {
				b.Errorf("bad answer (%d bytes, %v)", n, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkFastAnswer is the fast path alone: parse, look up, encode. It
// must not allocate.
func BenchmarkFastAnswer(b *testing.B) {
	s, err := New(Config{Domain: "cluster.local", Listen: []string{"127.0.0.1:0"}, TTL: 5e9, NegativeTTL: 5e9,
		ForwardTimeout: 1e9, MaxForwards: 1, UDPSize: 1232, MaxTCPConns: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Update(benchView(1000), nil); err != nil {
		b.Fatal(err)
	}
	q, _ := question("svc-500.bench.svc.cluster.local.", dns.TypeA).Pack()
	out := make([]byte, 0, 4096)
	z := s.zone.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := z.fastAnswer(q, out, 1232); !ok {
			b.Fatal("not answered")
		}
	}
}

// BenchmarkUpdate is the cost of one Update with 10,000 services (each with
// a named port) and 10,000 pods: what the agent pays per change of its view.
func BenchmarkUpdate(b *testing.B) {
	s, err := New(Config{Domain: "cluster.local", Listen: []string{"127.0.0.1:0"}, TTL: 5e9, NegativeTTL: 5e9,
		ForwardTimeout: 1e9, MaxForwards: 1, UDPSize: 1232, MaxTCPConns: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	services := benchView(10000)
	pods := make([]Pod, 10000)
	for i := range pods {
		pods[i] = Pod{Namespace: "bench", Name: fmt.Sprintf("pod-%d", i), IP: netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Update(services, pods); err != nil {
			b.Fatal(err)
		}
	}
}
