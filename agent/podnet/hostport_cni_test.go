//go:build linux

package podnet

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"
)

// recordingExec stands in for the CNI plugins: it records what each is
// given and answers ADD like bridge (a result with ip) and like portmap
// (the previous result passed on).
type recordingExec struct {
	ip string

	mu    sync.Mutex
	calls []pluginCall
}

type pluginCall struct {
	Plugin, Command string
	Conf            map[string]any
}

func (e *recordingExec) ExecPlugin(_ context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var conf map[string]any
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, err
	}
	call := pluginCall{Plugin: strings.TrimPrefix(pluginPath, "/fake/"), Conf: conf}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			call.Command = v
		}
	}
	e.mu.Lock()
	e.calls = append(e.calls, call)
	e.mu.Unlock()
	if call.Command != "ADD" {
		return nil, nil
	}
	if prev, ok := conf["prevResult"]; ok {
		return json.Marshal(prev)
	}
	return []byte(`{"cniVersion":"1.0.0","ips":[{"address":"` + e.ip + `/24"}]}`), nil
}

func (e *recordingExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/fake/" + plugin, nil
}

func (e *recordingExec) Decode([]byte) (version.PluginInfo, error) {
	return version.PluginSupports(cniVersion), nil
}

func (e *recordingExec) take() []pluginCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	calls := e.calls
	e.calls = nil
	return calls
}

// newRecordingCNI is a CNI whose plugins are e and whose iptables is ipt;
// New again with the same cfg is an agent restart (same cache dir).
func newRecordingCNI(t *testing.T, cfg Config, e *recordingExec, ipt iptablesAPI) *CNI {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Skipf("cannot make the CNI network here: %v", err)
	}
	c.cni = libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cacheDir(cfg), e)
	c.exec = e
	c.ipt = ipt
	return c
}

// runtimeConfigOf returns the runtimeConfig a plugin call was given, as JSON.
func runtimeConfigOf(t *testing.T, c pluginCall) string {
	t.Helper()
	rc, ok := c.Conf["runtimeConfig"]
	if !ok {
		return ""
	}
	b, err := json.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPortMappingsThroughLibcni checks, with stand-in plugins, that the
// mappings reach portmap (and only portmap) on ADD, that a DEL after an
// agent restart gives portmap the same mappings from libcni's cache, and
// how Setup of a pod already set up treats its host ports.
func TestPortMappingsThroughLibcni(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	const key, ip = "default_web-1", "10.244.0.7"
	path := "/run/netns/flt-" + key
	pms, _ := normalizePortMappings([]PortMapping{{HostPort: 8080, ContainerPort: 80}, {HostPort: 5353, ContainerPort: 53, Protocol: "udp"}})
	const wantRC = `{"portMappings":[{"containerPort":53,"hostPort":5353,"protocol":"udp"},{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]}`
	ctx := context.Background()

	e := &recordingExec{ip: ip}
	c := newRecordingCNI(t, cfg, e, newFakeIPTables())
	rt := c.runtimeConf(key, path)
	rt.CapabilityArgs = capabilityArgs(pms) // as setup does
	if _, err := c.cni.AddNetworkList(ctx, c.list, rt); err != nil {
		t.Fatal(err)
	}
	calls := e.take()
	if len(calls) != 2 || calls[0].Plugin != "bridge" || calls[1].Plugin != "portmap" {
		t.Fatalf("ADD called %+v, want bridge then portmap", calls)
	}
	if rc := runtimeConfigOf(t, calls[0]); rc != "" {
		t.Errorf("bridge was given runtimeConfig %s", rc)
	}
	if rc := runtimeConfigOf(t, calls[1]); rc != wantRC {
		t.Errorf("portmap ADD runtimeConfig = %s, want %s", rc, wantRC)
	}

	t.Run("setup again with the same mappings reads no iptables", func(t *testing.T) {
		ipt := newFakeIPTables()
		ipt.failOn = "ChainExists"
		c.ipt = ipt
		if err := c.syncPortMappings(ctx, key, path, netip.MustParseAddr(ip), pms); err != nil {
			t.Fatal(err)
		}
		if calls := e.take(); len(calls) != 0 {
			t.Errorf("plugins called: %+v", calls)
		}
	})

	t.Run("setup again with other mappings runs portmap alone", func(t *testing.T) {
		ipt := newFakeIPTables()
		portmapRules(ipt, cfg.BridgeName, key, ip, pms...)
		c.ipt = ipt
		other := []PortMapping{{HostPort: 9090, ContainerPort: 90, Protocol: "tcp"}}
		if err := c.syncPortMappings(ctx, key, path, netip.MustParseAddr(ip), other); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(ipt.dump(natTable), "\n"); strings.Contains(got, hostPortChainName(cfg.BridgeName, key)) {
			t.Errorf("old host port rules left:\n%s", got)
		}
		calls := e.take()
		if len(calls) != 1 || calls[0].Plugin != "portmap" || calls[0].Command != "ADD" {
			t.Fatalf("plugins called: %+v", calls)
		}
		conf := calls[0].Conf
		if rc := runtimeConfigOf(t, calls[0]); rc != `{"portMappings":[{"containerPort":90,"hostPort":9090,"protocol":"tcp"}]}` {
			t.Errorf("portmap runtimeConfig %s", rc)
		}
		prev, _ := json.Marshal(conf["prevResult"])
		if conf["name"] != cfg.BridgeName || conf["cniVersion"] != cniVersion || !strings.Contains(string(prev), `"address":"`+ip+`/24"`) {
			t.Errorf("portmap config %v", conf)
		}

		// The cache now says what is in force: the next Setup reads no
		// iptables, and the cached result is still there.
		_, cachedRT, err := c.cni.GetNetworkListCachedConfig(c.list, c.runtimeConf(key, path))
		if err != nil || cachedRT == nil {
			t.Fatalf("cached config after re-forwarding: %+v, %v", cachedRT, err)
		}
		if got, err := portMappingsFromCapabilityArgs(cachedRT.CapabilityArgs); err != nil || !reflect.DeepEqual(got, other) {
			t.Errorf("cached mappings = %v, %v; want %v", got, err, other)
		}
		if got, err := c.cachedIP(c.runtimeConf(key, path)); err != nil || got.String() != ip {
			t.Errorf("cached IP after rewriting the cache = %v, %v", got, err)
		}
		ipt.failOn = "ChainExists"
		if err := c.syncPortMappings(ctx, key, path, netip.MustParseAddr(ip), other); err != nil {
			t.Error(err)
		}
		ipt.failOn = ""
	})

	t.Run("DEL after a restart gives portmap the cached mappings", func(t *testing.T) {
		const wantRC = `{"portMappings":[{"containerPort":90,"hostPort":9090,"protocol":"tcp"}]}` // as re-forwarded above
		e2 := &recordingExec{ip: ip}
		ipt := newFakeIPTables()
		chain := portmapRules(ipt, cfg.BridgeName, key, ip, pms...)
		c2 := newRecordingCNI(t, cfg, e2, ipt)
		if err := c2.del(ctx, c2.runtimeConf(key, path)); err != nil {
			t.Fatal(err)
		}
		calls := e2.take()
		if len(calls) != 2 || calls[0].Plugin != "portmap" || calls[0].Command != "DEL" || calls[1].Plugin != "bridge" {
			t.Fatalf("DEL called %+v, want portmap then bridge", calls)
		}
		if rc := runtimeConfigOf(t, calls[0]); rc != wantRC {
			t.Errorf("portmap DEL runtimeConfig = %s, want %s", rc, wantRC)
		}
		// The stand-in plugin removed nothing; del's own sweep did.
		if got := strings.Join(ipt.dump(natTable), "\n"); strings.Contains(got, chain) {
			t.Errorf("host port rules left after DEL:\n%s", got)
		}
		if _, rt, _ := c2.cni.GetNetworkListCachedConfig(c2.list, c2.runtimeConf(key, path)); rt != nil {
			t.Errorf("cache left after DEL: %+v", rt)
		}
	})

	t.Run("without mappings portmap gets no runtimeConfig", func(t *testing.T) {
		rt := c.runtimeConf("plain", path)
		rt.CapabilityArgs = capabilityArgs(nil)
		if _, err := c.cni.AddNetworkList(ctx, c.list, rt); err != nil {
			t.Fatal(err)
		}
		for _, call := range e.take() {
			if rc := runtimeConfigOf(t, call); rc != "" {
				t.Errorf("%s given runtimeConfig %s", call.Plugin, rc)
			}
		}
		if !reflect.DeepEqual(rt.CapabilityArgs, map[string]any(nil)) {
			t.Errorf("capability args %v", rt.CapabilityArgs)
		}
	})
}
