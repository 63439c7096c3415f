package routes

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func rt(cidr, via string) Route {
	r := Route{Via: netip.MustParseAddr(via)}
	r.PodCIDR, _ = netip.ParsePrefix(cidr)
	return r
}

// Routes of other protocols in the tests: the kernel's (2), the
// administrator's (static, 4), a DHCP client's (16).
var hostRoutes = []string{
	"0.0.0.0/0 via 10.0.0.1 proto 16 metric 100",
	"10.0.0.0/24 dev 2 proto 2",
	"10.244.0.0/24 dev 3 proto 2",
	"192.168.50.0/24 via 10.0.0.9 proto 4",
	"10.244.7.0/24 via 10.0.0.7 proto 79 table 100",
}

func TestSync(t *testing.T) {
	tests := []struct {
		name     string
		have     []string // besides hostRoutes
		want     []Route
		failDst  string // RouteReplace of this fails with ENETUNREACH
		wantHave []string
		wantOps  int
		wantErrs []string
	}{
		{
			name:     "add",
			want:     []Route{rt("10.244.1.0/24", "10.0.0.2"), rt("10.244.2.0/24", "10.0.0.3")},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79"},
			wantOps:  2,
		},
		{
			name:     "unchanged is no change",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79"},
			want:     []Route{rt("10.244.2.0/24", "10.0.0.3"), rt("10.244.1.0/24", "10.0.0.2")},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79"},
		},
		{
			name:     "new gateway replaces in place",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79"},
			want:     []Route{rt("10.244.1.0/24", "10.0.0.22")},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.22 proto 79"},
			wantOps:  1,
		},
		{
			name:     "remove unwanted, only ours",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79", "10.244.9.0/24 via 10.0.0.9 proto 4"},
			want:     []Route{rt("10.244.2.0/24", "10.0.0.3")},
			wantHave: []string{"10.244.2.0/24 via 10.0.0.3 proto 79"},
			wantOps:  1,
		},
		{
			name:     "empty want removes all ours",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "0.0.0.0/0 via 10.0.0.5 proto 79 metric 900"},
			wantHave: nil,
			wantOps:  2,
		},
		{
			name:     "foreign route to the same range is not replaced",
			want:     []Route{rt("192.168.50.0/24", "10.0.0.4"), rt("10.244.0.0/24", "10.0.0.4"), rt("10.244.1.0/24", "10.0.0.2")},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79"},
			wantOps:  1,
			wantErrs: []string{
				"route 10.244.0.0/24 via 10.0.0.4: the table already has a route to 10.244.0.0/24 that is not flotilla's (10.244.0.0/24 dev #3 proto 2 metric 0)",
				"route 192.168.50.0/24 via 10.0.0.4: the table already has a route to 192.168.50.0/24 that is not flotilla's (192.168.50.0/24 via 10.0.0.9 proto 4 metric 0)",
			},
		},
		{
			name: "refused entries keep their routes",
			have: []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79", "10.244.3.0/24 via 10.0.0.4 proto 79"},
			want: []Route{
				rt("10.244.1.0/24", "10.0.0.2"), rt("10.244.1.0/24", "10.0.0.99"), // two nodes claim one range
				rt("10.244.2.0/24", "fd00::3"),                    // mixed versions
				{PodCIDR: netip.MustParsePrefix("10.244.3.0/24")}, // no gateway
				{Via: netip.MustParseAddr("10.0.0.5")},            // no range
				rt("10.244.4.0/24", "10.0.0.5"),
			},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79", "10.244.3.0/24 via 10.0.0.4 proto 79", "10.244.4.0/24 via 10.0.0.5 proto 79"},
			wantOps:  1,
			wantErrs: []string{
				"pod CIDR 10.244.1.0/24 is wanted via both 10.0.0.2 and 10.0.0.99",
				"route 10.244.2.0/24 via fd00::3: pod CIDR and gateway are of different IP versions",
				"route to 10.244.3.0/24: no gateway address",
				"no valid pod CIDR",
			},
		},
		{
			name:     "host bits are masked; duplicates are fine",
			want:     []Route{rt("10.244.5.7/24", "10.0.0.5"), rt("10.244.5.0/24", "10.0.0.5")},
			wantHave: []string{"10.244.5.0/24 via 10.0.0.5 proto 79"},
			wantOps:  1,
		},
		{
			name:     "a failed replace keeps the old route and the rest goes on",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79"},
			want:     []Route{rt("10.244.1.0/24", "192.0.2.1"), rt("10.244.2.0/24", "10.0.0.3")},
			failDst:  "10.244.1.0/24",
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79"},
			wantOps:  1,
			wantErrs: []string{"set route 10.244.1.0/24 via 192.0.2.1: network is unreachable: the gateway is not on a network this node is directly on"},
		},
		{
			name:     "our route with another metric is replaced by ours at metric 0",
			have:     []string{"10.244.1.0/24 via 10.0.0.2 proto 79 metric 50"},
			want:     []Route{rt("10.244.1.0/24", "10.0.0.2")},
			wantHave: []string{"10.244.1.0/24 via 10.0.0.2 proto 79"},
			wantOps:  2,
		},
		{
			name:     "ipv6",
			have:     []string{"fd10:244:2::/64 via fd00::3 proto 79"},
			want:     []Route{rt("fd10:244:1::/64", "fd00::2")},
			wantHave: []string{"fd10:244:1::/64 via fd00::2 proto 79"},
			wantOps:  2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeNetlink{}
			for _, s := range append(slices.Clone(hostRoutes), tt.have...) {
				f.routes = append(f.routes, parseRoute(s))
			}
			if tt.failDst != "" {
				f.failDst = map[string]error{tt.failDst: unix.ENETUNREACH}
			}
			m := newManager(Config{}, f)
			err := m.Sync(context.Background(), tt.want)
			checkErrs(t, err, tt.wantErrs)

			var ours, others []string
			for _, s := range f.table() {
				if strings.Contains(s, "proto 79") && !strings.Contains(s, "table 100") {
					ours = append(ours, s)
				} else {
					others = append(others, s)
				}
			}
			if !slices.Equal(ours, tt.wantHave) {
				t.Errorf("our routes:\n  %s\nwant:\n  %s", strings.Join(ours, "\n  "), strings.Join(tt.wantHave, "\n  "))
			}
			wantOthers := slices.Clone(hostRoutes)
			for _, s := range tt.have {
				if !strings.Contains(s, "proto 79") {
					wantOthers = append(wantOthers, s)
				}
			}
			slices.Sort(wantOthers)
			if !slices.Equal(others, wantOthers) {
				t.Errorf("other routes changed:\n  %s\nwant:\n  %s", strings.Join(others, "\n  "), strings.Join(wantOthers, "\n  "))
			}
			if len(f.ops) != tt.wantOps {
				t.Errorf("%d kernel changes, want %d: %v", len(f.ops), tt.wantOps, f.ops)
			}

			// A second Sync with the same input changes nothing.
			f.ops = nil
			_ = m.Sync(context.Background(), tt.want)
			if tt.failDst == "" && len(f.ops) != 0 {
				t.Errorf("second Sync changed the kernel: %v", f.ops)
			}
		})
	}
}

func checkErrs(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Sync: no error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
}

func TestSyncOtherTable(t *testing.T) {
	f := &fakeNetlink{}
	for _, s := range append(slices.Clone(hostRoutes), "10.244.1.0/24 via 10.0.0.2 proto 79") {
		f.routes = append(f.routes, parseRoute(s))
	}
	m := newManager(Config{Table: 100}, f)
	if err := m.Sync(context.Background(), []Route{rt("10.244.8.0/24", "10.0.0.8")}); err != nil {
		t.Fatal(err)
	}
	want := []string{"del 10.244.7.0/24 via 10.0.0.7 proto 79 table 100", "replace 10.244.8.0/24 via 10.0.0.8 proto 79 table 100"}
	slices.Sort(f.ops)
	if !slices.Equal(f.ops, want) {
		t.Fatalf("ops %v, want %v (main table untouched)", f.ops, want)
	}
}

func TestCleanup(t *testing.T) {
	f := &fakeNetlink{}
	for _, s := range append(slices.Clone(hostRoutes), "10.244.1.0/24 via 10.0.0.2 proto 79", "10.244.2.0/24 via 10.0.0.3 proto 79", "10.244.3.0/24 via 10.0.0.4 proto 80") {
		f.routes = append(f.routes, parseRoute(s))
	}
	m := newManager(Config{}, f)
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(hostRoutes)
	want = append(want, "10.244.3.0/24 via 10.0.0.4 proto 80")
	slices.Sort(want)
	if got := f.table(); !slices.Equal(got, want) {
		t.Fatalf("after Cleanup:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// Another protocol number is another owner.
	m80 := newManager(Config{Protocol: 80}, f)
	if err := m80.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = slices.Sorted(slices.Values(hostRoutes))
	if got := f.table(); !slices.Equal(got, want) {
		t.Fatalf("after Cleanup of proto 80: %v, want %v", got, want)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Protocol: unix.RTPROT_STATIC}, {Protocol: unix.RTPROT_KERNEL}, {Protocol: 256}, {Table: unix.RT_TABLE_LOCAL}, {Table: -1}} {
		f := &fakeNetlink{routes: []netlink.Route{parseRoute("10.244.1.0/24 via 10.0.0.2 proto 4")}}
		m := newManager(cfg, f)
		if err := m.Sync(context.Background(), nil); err == nil {
			t.Errorf("Sync with %+v: no error", cfg)
		}
		if err := m.Cleanup(context.Background()); err == nil {
			t.Errorf("Cleanup with %+v: no error", cfg)
		}
		if f.listCalls != 0 || len(f.routes) != 1 {
			t.Errorf("%+v: the kernel was used", cfg)
		}
	}
}
