package agent

import (
	"context"
	"strings"
	"testing"
)

func TestGossipJoinAddr(t *testing.T) {
	tests := []struct {
		addr string
		port int
		want string
	}{
		{"10.0.0.1", 7402, "10.0.0.1:7402"},         // servers share this agent's port
		{"10.0.0.1:7500", 10042, "10.0.0.1:7500"},   // a simulated node names the servers'
		{"fd00::1", 7402, "[fd00::1]:7402"},         // a bare IPv6 literal
		{"[fd00::1]:7500", 10042, "[fd00::1]:7500"}, // with its port
		{"server-1.example", 7402, "server-1.example:7402"},
	}
	for _, tt := range tests {
		if got := gossipJoinAddr(tt.addr, tt.port); got != tt.want {
			t.Errorf("gossipJoinAddr(%q, %d) = %q, want %q", tt.addr, tt.port, got, tt.want)
		}
	}
}

func TestRunSimulatedNodeRefusesWhatIsNoClient(t *testing.T) {
	for name, change := range map[string]func(*Config){
		"a server":    func(c *Config) { c.Server, c.RetryJoin = true, []string{"10.0.0.1"} },
		"not a fleet": func(c *Config) {},
	} {
		cfg := DefaultConfig()
		cfg.DataDir = t.TempDir()
		change(&cfg)
		err := RunSimulatedNode(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "a simulated node is a fleet client") {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
}
