package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flotilla-io/flotilla/agent/state"
)

func TestNodeSearchDomains(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("domain old.example\nnameserver 10.0.0.2\nsearch corp.example ec2.internal\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := nodeSearchDomains(p); !slices.Equal(got, []string{"corp.example", "ec2.internal"}) {
		t.Errorf("search domains = %q; want the last search line's", got)
	}
	if got := nodeSearchDomains(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("search domains of a missing file = %q", got)
	}
}

func TestLayoutOf(t *testing.T) {
	gw := netip.MustParseAddr("10.244.3.1")
	dev := DefaultConfig()
	dev.Dev, dev.PodCIDR = true, "10.250.7.0/24"
	l, err := layoutOf(&dev, state.ClusterConfig{}, gw)
	if err != nil {
		t.Fatal(err)
	}
	// No cluster config: the defaults; a dev agent's cluster is its node.
	if l.serviceRange.String() != state.DefaultServiceCIDR || l.domain != "cluster.local" || l.clusterCIDR != l.nodeCIDR || l.nodeCIDR.String() != "10.250.7.0/24" {
		t.Errorf("dev layout = %+v", l)
	}
	fleet := DefaultConfig()
	asFleetServer(&fleet)
	fleet.PodCIDR, fleet.ClusterPodCIDR = "10.244.3.0/24", "10.244.0.0/16"
	l, err = layoutOf(&fleet, state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.100.0.0/20", ClusterDomain: "fleet.internal"}, gw)
	if err != nil {
		t.Fatal(err)
	}
	if l.serviceRange.String() != "10.100.0.0/20" || l.domain != "fleet.internal" || l.clusterCIDR.String() != "10.244.0.0/16" || l.gateway != gw {
		t.Errorf("fleet layout = %+v", l)
	}
}

func TestDevClusterConfig(t *testing.T) {
	c := DefaultConfig()
	c.Dev, c.PodCIDR, c.ServiceCIDR = true, "10.250.7.0/26", "10.97.0.0/24"
	cc := devClusterConfig(&c)
	if err := cc.Validate(); err != nil {
		t.Fatal(err)
	}
	if cc.PodCIDR != "10.250.7.0/26" || cc.NodeMaskBits != 26 || cc.ServiceRange().String() != "10.97.0.0/24" {
		t.Errorf("dev cluster config = %+v", cc)
	}
	if err := cc.NodeRange(netip.MustParsePrefix(c.PodCIDR)); err != nil {
		t.Errorf("the dev node's own range does not fit its cluster config: %v", err)
	}
}
