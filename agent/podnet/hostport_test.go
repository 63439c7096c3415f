package podnet

import (
	"encoding/json"
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNormalizePortMappings(t *testing.T) {
	tests := []struct {
		name    string
		in      []PortMapping
		want    []PortMapping
		wantErr []string
	}{
		{name: "none", in: nil, want: nil},
		{
			name: "protocol defaulted and lower-cased, sorted, duplicates dropped",
			in: []PortMapping{
				{HostPort: 9090, ContainerPort: 90, Protocol: "UDP"},
				{HostPort: 8080, ContainerPort: 80},
				{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
				{HostPort: 8080, ContainerPort: 80, Protocol: "udp"},
			},
			want: []PortMapping{
				{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
				{HostPort: 8080, ContainerPort: 80, Protocol: "udp"},
				{HostPort: 9090, ContainerPort: 90, Protocol: "udp"},
			},
		},
		{
			name:    "one host port to two container ports",
			in:      []PortMapping{{HostPort: 8080, ContainerPort: 80}, {HostPort: 8080, ContainerPort: 81, Protocol: "TCP"}},
			wantErr: []string{"host port 8080/tcp is mapped to container ports 80 and 81"},
		},
		{
			name: "every bad entry is reported",
			in: []PortMapping{
				{HostPort: 0, ContainerPort: 80},
				{HostPort: 70000, ContainerPort: 80},
				{HostPort: 80, ContainerPort: 0},
				{HostPort: 80, ContainerPort: 80, Protocol: "sctp"},
			},
			wantErr: []string{
				"host port 0 is out of range",
				"host port 70000 is out of range",
				"host port 80/tcp: container port 0 is out of range",
				`protocol "sctp" is not "tcp" or "udp"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalizePortMappings(tt.in)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestCapabilityArgs(t *testing.T) {
	if args := capabilityArgs(nil); args != nil {
		t.Errorf("capability args without mappings = %v, want nil (no runtimeConfig for portmap)", args)
	}
	pms := []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 5353, ContainerPort: 53, Protocol: "udp"}}
	args := capabilityArgs(pms)
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	// The shape of CNI's portMappings convention, which portmap reads.
	want := `{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]}`
	if string(b) != want {
		t.Errorf("capability args = %s, want %s", b, want)
	}
	// libcni's cache gives them back as decoded JSON.
	var cached map[string]any
	if err := json.Unmarshal(b, &cached); err != nil {
		t.Fatal(err)
	}
	got, err := portMappingsFromCapabilityArgs(cached)
	wantBack, _ := normalizePortMappings(pms)
	if err != nil || !reflect.DeepEqual(got, wantBack) {
		t.Errorf("read back %v, %v; want %v", got, err, wantBack)
	}
	if got, err := portMappingsFromCapabilityArgs(nil); got != nil || err != nil {
		t.Errorf("no cached args read back as %v, %v", got, err)
	}
}

func TestWithPortMappings(t *testing.T) {
	a := []PortMapping{{HostPort: 1, ContainerPort: 2}}
	b := []PortMapping{{HostPort: 3, ContainerPort: 4}}
	o := applySetupOptions([]SetupOption{WithPortMappings(a), nil, WithPortMappings(b)})
	if want := slices.Concat(a, b); !reflect.DeepEqual(o.portMappings, want) {
		t.Errorf("options collected %v, want %v", o.portMappings, want)
	}
}

func TestHostPortChainName(t *testing.T) {
	// As the portmap plugin computes it (utils.MustFormatChainNameWithPrefix):
	// checked against the real plugin in TestHostPortIntegration.
	got := hostPortChainName("flotilla0", "default_web-1")
	if len(got) != maxChainName || !strings.HasPrefix(got, hostPortChainPrefix) {
		t.Errorf("chain name %q", got)
	}
	if got == hostPortChainName("flotilla1", "default_web-1") {
		t.Error("two networks share a chain name")
	}
}

// portmapRules installs what the portmap plugin makes for one pod.
func portmapRules(f *fakeIPTables, network, key, ip string, pms ...PortMapping) string {
	chain := hostPortChainName(network, key)
	if _, ok := f.tables[natTable].chains[hostPortDNATChain]; !ok {
		f.set(natTable, hostPortDNATChain)
		f.set(natTable, hostPortSetMarkChain, "-m comment --comment CNI-portfwd-masquerade-mark -j MARK --set-xmark 0x2000/0x2000")
		f.set(natTable, hostPortMasqChain, "-m mark --mark 0x2000/0x2000 -j MASQUERADE")
		nat := f.tables[natTable]
		for _, parent := range []string{"PREROUTING", "OUTPUT"} {
			nat.chains[parent] = append(nat.chains[parent], strings.Fields("-m addrtype --dst-type LOCAL -j "+hostPortDNATChain))
		}
		nat.chains["POSTROUTING"] = append([][]string{strings.Fields("-m comment --comment requiring-masquerade -j " + hostPortMasqChain)}, nat.chains["POSTROUTING"]...)
	}
	podRange := netip.PrefixFrom(netip.MustParseAddr(ip), 24).Masked().String()
	var rules []string
	for _, m := range pms {
		base := "-p " + m.Protocol + " -m " + m.Protocol + " --dport " + strconv.Itoa(m.HostPort)
		rules = append(rules,
			"-s "+podRange+" "+base+" -j "+hostPortSetMarkChain,
			"-s 127.0.0.1/32 "+base+" -j "+hostPortSetMarkChain,
			base+" -j DNAT --to-destination "+ip+":"+strconv.Itoa(m.ContainerPort))
		nat := f.tables[natTable]
		nat.chains[hostPortDNATChain] = append(nat.chains[hostPortDNATChain], []string{
			"-p", m.Protocol, "-m", "comment", "--comment", hostPortComment(network, key),
			"-m", "multiport", "--dports", strconv.Itoa(m.HostPort), "-j", chain})
	}
	f.set(natTable, chain, rules...)
	return chain
}

func TestRemoveHostPortRules(t *testing.T) {
	web := PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
	dns := PortMapping{HostPort: 5353, ContainerPort: 53, Protocol: "udp"}
	setup := func() (*fakeIPTables, map[string]string) {
		f := newFakeIPTables()
		chains := map[string]string{
			"a":     portmapRules(f, "flotilla0", "pod-a", "10.244.0.2", web, dns),
			"b":     portmapRules(f, "flotilla0", "pod-b", "10.244.0.3", PortMapping{HostPort: 9090, ContainerPort: 90, Protocol: "tcp"}),
			"other": portmapRules(f, "other0", "pod-a", "10.9.0.2", PortMapping{HostPort: 7070, ContainerPort: 70, Protocol: "tcp"}),
		}
		return f, chains
	}

	t.Run("live rules read back", func(t *testing.T) {
		f, _ := setup()
		ip := netip.MustParseAddr("10.244.0.2")
		live, err := liveHostPortDNAT(f, "flotilla0", "pod-a")
		pms, _ := normalizePortMappings([]PortMapping{web, dns})
		if want := wantHostPortDNAT(pms, ip); err != nil || !slices.Equal(live, want) {
			t.Errorf("live = %v, %v; want %v", live, err, want)
		}
		if live, err := liveHostPortDNAT(f, "flotilla0", "pod-x"); err != nil || len(live) != 0 {
			t.Errorf("live of a pod without host ports = %v, %v", live, err)
		}
	})

	t.Run("one pod", func(t *testing.T) {
		f, chains := setup()
		for i := range 2 { // idempotent
			if err := removeHostPortRules(f, "flotilla0", "pod-a"); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		dump := strings.Join(f.dump(natTable), "\n")
		if strings.Contains(dump, chains["a"]) || strings.Contains(dump, "10.244.0.2") || strings.Contains(dump, `id: \"pod-a\"" -m multiport --dports 8080`) {
			t.Errorf("pod-a's rules survived:\n%s", dump)
		}
		for _, keep := range []string{chains["b"], chains["other"], "10.9.0.2:70", "10.244.0.3:90", hostPortSetMarkChain, hostPortMasqChain} {
			if !strings.Contains(dump, keep) {
				t.Errorf("%s went too:\n%s", keep, dump)
			}
		}
	})

	t.Run("chain left without its entry rules", func(t *testing.T) {
		f, chains := setup()
		nat := f.tables[natTable]
		nat.chains[hostPortDNATChain] = slices.DeleteFunc(nat.chains[hostPortDNATChain], func(r []string) bool { return iptrule.ArgAfter(r, "-j") == chains["a"] })
		if err := removeHostPortRules(f, "flotilla0", "pod-a"); err != nil {
			t.Fatal(err)
		}
		if _, ok := nat.chains[chains["a"]]; ok {
			t.Errorf("chain %s found by name survived", chains["a"])
		}
	})

	t.Run("cleanup: the network's pods, then the shared chains once unused", func(t *testing.T) {
		f, chains := setup()
		// A chain whose entry rules are gone, forwarding into our range.
		f.set(natTable, "CNI-DN-orphan", "-p tcp -m tcp --dport 6060 -j DNAT --to-destination 10.244.0.77:60")
		pod := netip.MustParsePrefix("10.244.0.0/24")
		for i := range 2 {
			if err := cleanupHostPorts(f, "flotilla0", pod); err != nil {
				t.Fatalf("run %d: %v", i+1, err)
			}
		}
		dump := strings.Join(f.dump(natTable), "\n")
		for _, gone := range []string{chains["a"], chains["b"], "CNI-DN-orphan", "10.244.0."} {
			if strings.Contains(dump, gone) {
				t.Errorf("%s survived cleanup:\n%s", gone, dump)
			}
		}
		// Another network still forwards a port: the shared chains stay.
		for _, keep := range []string{chains["other"], hostPortDNATChain, hostPortSetMarkChain, hostPortMasqChain} {
			if !strings.Contains(dump, keep) {
				t.Errorf("%s went:\n%s", keep, dump)
			}
		}
		if err := cleanupHostPorts(f, "other0", netip.MustParsePrefix("10.9.0.0/24")); err != nil {
			t.Fatal(err)
		}
		if got := f.dump(natTable); len(got) != 0 {
			t.Errorf("nat table after the last network's cleanup: %q", got)
		}
	})

	t.Run("cleanup: another agent's pod chain vanishing while read is skipped", func(t *testing.T) {
		f, _ := setup()
		f.set(natTable, "CNI-DN-vanishing", "-p tcp -m tcp --dport 7070 -j DNAT --to-destination 10.9.0.9:70")
		v := &vanishingChain{fakeIPTables: f, chain: "CNI-DN-vanishing"}
		if err := cleanupHostPorts(v, "flotilla0", netip.MustParsePrefix("10.244.0.0/24")); err != nil {
			t.Fatal(err)
		}
		if !v.failed {
			t.Fatal("the vanishing chain was never read")
		}
	})

	t.Run("nothing installed", func(t *testing.T) {
		f := newFakeIPTables()
		if err := removeHostPortRules(f, "flotilla0", "pod-a"); err != nil {
			t.Error(err)
		}
		if err := cleanupHostPorts(f, "flotilla0", netip.MustParsePrefix("10.244.0.0/24")); err != nil {
			t.Error(err)
		}
		if f.writes != 0 {
			t.Errorf("%d writes with nothing installed", f.writes)
		}
	})
}

// vanishingChain fails the first read of chain and deletes it, as another
// agent's portmap DEL does between a list of chains and a read of one.
type vanishingChain struct {
	*fakeIPTables
	chain  string
	failed bool
}

func (v *vanishingChain) List(table, chain string) ([]string, error) {
	if chain == v.chain && !v.failed {
		v.failed = true
		delete(v.tables[table].chains, chain)
		return nil, fmt.Errorf("chain `%s' in table `%s' is incompatible, use 'nft' tool", chain, table)
	}
	return v.fakeIPTables.List(table, chain)
}
