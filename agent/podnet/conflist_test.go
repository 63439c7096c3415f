package podnet

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestBuildConfList(t *testing.T) {
	base := DefaultConfig()
	base.DataDir = "/var/lib/flotilla/cni"

	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{
			name:   "default",
			mutate: func(*Config) {},
			want: `{
			  "cniVersion": "1.0.0",
			  "name": "flotilla0",
			  "plugins": [{
			    "type": "bridge",
			    "bridge": "flotilla0",
			    "isGateway": true,
			    "ipMasq": true,
			    "hairpinMode": true,
			    "ipam": {
			      "type": "host-local",
			      "ranges": [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]],
			      "routes": [{"dst": "0.0.0.0/0"}],
			      "dataDir": "/var/lib/flotilla/cni/ipam"
			    }
			  }, {
			    "type": "portmap",
			    "capabilities": {"portMappings": true},
			    "snat": true
			  }]
			}`,
		},
		{
			name: "no masquerade, MTU, other range",
			mutate: func(c *Config) {
				c.BridgeName = "ft-test1"
				c.PodCIDR = "10.251.7.0/25"
				c.IPMasq = false
				c.MTU = 1400
				c.DataDir = "/tmp/x"
			},
			want: `{
			  "cniVersion": "1.0.0",
			  "name": "ft-test1",
			  "plugins": [{
			    "type": "bridge",
			    "bridge": "ft-test1",
			    "isGateway": true,
			    "ipMasq": false,
			    "hairpinMode": true,
			    "mtu": 1400,
			    "ipam": {
			      "type": "host-local",
			      "ranges": [[{"subnet": "10.251.7.0/25", "gateway": "10.251.7.1"}]],
			      "routes": [{"dst": "0.0.0.0/0"}],
			      "dataDir": "/tmp/x/ipam"
			    }
			  }, {
			    "type": "portmap",
			    "capabilities": {"portMappings": true},
			    "snat": true
			  }]
			}`,
		},
		{
			name:   "cluster CIDR: the MASQ chain masquerades, not the plugin",
			mutate: func(c *Config) { c.PodCIDR, c.ClusterCIDR = "10.244.3.0/24", "10.244.0.0/16" },
			want: `{
			  "cniVersion": "1.0.0",
			  "name": "flotilla0",
			  "plugins": [{
			    "type": "bridge",
			    "bridge": "flotilla0",
			    "isGateway": true,
			    "ipMasq": false,
			    "hairpinMode": true,
			    "ipam": {
			      "type": "host-local",
			      "ranges": [[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}]],
			      "routes": [{"dst": "0.0.0.0/0"}],
			      "dataDir": "/var/lib/flotilla/cni/ipam"
			    }
			  }, {
			    "type": "portmap",
			    "capabilities": {"portMappings": true},
			    "snat": true
			  }]
			}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			got, err := buildConfList(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var gotV, wantV any
			if err := json.Unmarshal(got, &gotV); err != nil {
				t.Fatalf("generated conflist is not JSON: %v\n%s", err, got)
			}
			if err := json.Unmarshal([]byte(tt.want), &wantV); err != nil {
				t.Fatalf("bad expected JSON: %v", err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("conflist mismatch\n got: %s\nwant: %s", got, tt.want)
			}

			// libcni must read it the way the plugins will.
			list, err := libcni.ConfListFromBytes(got)
			if err != nil {
				t.Fatalf("libcni rejects the conflist: %v", err)
			}
			if list.Name != cfg.BridgeName || list.CNIVersion != cniVersion {
				t.Errorf("libcni read name %q version %q", list.Name, list.CNIVersion)
			}
			if len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "bridge" || list.Plugins[1].Network.Type != "portmap" {
				t.Fatalf("libcni read plugins %+v", list.Plugins)
			}
			// libcni hands portmap the portMappings capability argument
			// only if the plugin declares it.
			if caps := list.Plugins[1].Network.Capabilities; !caps[portMappingsCapability] {
				t.Errorf("portmap capabilities %v lack %q", caps, portMappingsCapability)
			}
		})
	}
}
