package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
)

// cniVersion is the spec version of the conflist. Debian 12's
// containernetworking-plugins (v1.1.1) support 0.1.0 through 1.0.0; libcni
// v1.3 would also speak 1.1.0, but the plugins reject it.
const cniVersion = "1.0.0"

// podIfName is the pod's interface inside its netns.
const podIfName = "eth0"

// The conflist is built from these typed structs rather than a text
// template, so a bridge name or path can never produce invalid JSON.

type netConfList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type bridgeNetConf struct {
	Type        string        `json:"type"`
	Bridge      string        `json:"bridge"`
	IsGateway   bool          `json:"isGateway"`
	IPMasq      bool          `json:"ipMasq"`
	HairpinMode bool          `json:"hairpinMode"`
	MTU         int           `json:"mtu,omitempty"`
	IPAM        hostLocalIPAM `json:"ipam"`
}

// portmapNetConf forwards host ports (the portMappings capability) to the
// pod. SNAT masquerades what reaches a host port from the node itself
// (127.0.0.1 included) and from pods on the bridge, so replies come back
// through the node and are un-NATed; without it a pod calling its own or a
// neighbour's host port would get replies from the wrong address. Traffic
// from other hosts keeps its source address.
type portmapNetConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         bool            `json:"snat"`
}

type hostLocalIPAM struct {
	Type    string             `json:"type"`
	Ranges  [][]hostLocalRange `json:"ranges"`
	Routes  []ipamRoute        `json:"routes"`
	DataDir string             `json:"dataDir"`
}

type hostLocalRange struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
}

type ipamRoute struct {
	Dst string `json:"dst"`
}

// networkName is the CNI network name. It is the bridge name, so two agents
// on one host (lab nodes) never share host-local state, cache files or the
// bridge plugin's masquerade chains.
func networkName(cfg Config) string { return cfg.BridgeName }

// ipamDir is host-local's dataDir; host-local keeps one directory per
// network name below it, holding one file per allocated IP.
func ipamDir(cfg Config) string { return filepath.Join(cfg.DataDir, "ipam") }

// cacheDir is libcni's result cache (results/<network>-<key>-<ifname>).
func cacheDir(cfg Config) string { return filepath.Join(cfg.DataDir, "cache") }

// gatewayOf is the first address of the pod range; the bridge plugin puts
// it on the bridge (isGateway) and pods route through it.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// buildConfList renders the conflist for a validated config.
func buildConfList(cfg Config) ([]byte, error) { return renderConfList(cfg, true) }

// buildConfListNoPorts renders the conflist for pods without host ports:
// the same without portmap, which would pass the result on and change
// nothing, at the price of one more plugin process per pod (2% of the
// node's CPU while 200 pods started).
func buildConfListNoPorts(cfg Config) ([]byte, error) { return renderConfList(cfg, false) }

func renderConfList(cfg Config, portmap bool) ([]byte, error) {
	pfx, err := netip.ParsePrefix(cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("parse pod CIDR %q: %w", cfg.PodCIDR, err)
	}
	list := netConfList{
		CNIVersion: cniVersion,
		Name:       networkName(cfg),
		Plugins: []any{
			bridgeNetConf{
				Type:        "bridge",
				Bridge:      cfg.BridgeName,
				IsGateway:   true,
				IPMasq:      cfg.IPMasq && cfg.ClusterCIDR == "", // else the MASQ chain does it
				HairpinMode: true,
				MTU:         cfg.MTU,
				IPAM: hostLocalIPAM{
					Type: "host-local",
					Ranges: [][]hostLocalRange{{{
						Subnet:  pfx.String(),
						Gateway: gatewayOf(pfx).String(),
					}}},
					Routes:  []ipamRoute{{Dst: "0.0.0.0/0"}},
					DataDir: ipamDir(cfg),
				},
			},
		},
	}
	if portmap {
		// Last: it reads the pod IP from the bridge plugin's result.
		list.Plugins = append(list.Plugins, portmapNetConf{
			Type:         "portmap",
			Capabilities: map[string]bool{portMappingsCapability: true},
			SNAT:         true,
		})
	}
	return json.MarshalIndent(list, "", "  ")
}
