package authz

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// fakeView is the state authorization reads: node records and where pods
// are placed.
type fakeView struct {
	nodes map[string]api.Node
	pods  map[string]string // pod ID → node
}

func (v fakeView) Node(name string) (api.Node, bool) {
	n, ok := v.nodes[name]
	return n, ok
}

func (v fakeView) PodNodes(ids []string) map[string]string {
	out := map[string]string{}
	for _, id := range ids {
		if n, ok := v.pods[id]; ok {
			out[id] = n
		}
	}
	return out
}

var _ View = fakeView{}

// The fleet of the table: server s1 at 10.0.0.1, clients c1 at 10.0.0.11
// and c2 at 10.0.0.12, each with one pod.
var view = fakeView{
	nodes: map[string]api.Node{
		"s1": {Name: "s1", Address: "10.0.0.1", Server: true},
		"c1": {Name: "c1", Address: "10.0.0.11"},
		"c2": {Name: "c2", Address: "10.0.0.12"},
	},
	pods: map[string]string{
		"default/on-s1": "s1",
		"default/on-c1": "c1",
		"default/on-c2": "c2",
	},
}

func caller(role, name, ip string, operator bool) Caller {
	return Caller{Identity: pki.Identity{Name: name, Role: role, IPs: []net.IP{net.ParseIP(ip)}}, Operator: operator}
}

var (
	server     = caller(pki.RoleServer, "s1", "10.0.0.1", false)
	client     = caller(pki.RoleClient, "c1", "10.0.0.11", false)
	clientOp   = caller(pki.RoleClient, "c1", "10.0.0.11", true)
	serverOp   = caller(pki.RoleServer, "s1", "10.0.0.1", true)
	noRole     = caller("", "x1", "10.0.0.99", false)
	noRoleOp   = caller("", "x1", "10.0.0.99", true)
	deployment = api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
		Containers: []api.Container{{Name: "app", Image: "demo:v1"}}}
)

func statuses(node string, ids ...string) *state.SetPodStatuses {
	c := &state.SetPodStatuses{Node: node}
	for _, id := range ids {
		c.Updates = append(c.Updates, state.PodStatusUpdate{ID: id, Status: api.PodStatus{Phase: api.PodRunning}})
	}
	return c
}

func register(name, addr string, srv bool) *state.RegisterNode {
	return &state.RegisterNode{Node: api.Node{Name: name, Address: addr, Server: srv}}
}

func TestAuthorize(t *testing.T) {
	const (
		onlyAPI     = "it comes only from the API with the API token, or from a server"
		onlyServers = "only servers make it; a client agent registers itself"
		devOnly     = "it is written by a single dev agent only"
	)
	tests := []struct {
		name   string
		caller Caller
		cmd    state.Command
		// want is "" to allow, else what the refusal must say (it must
		// also name the caller and the refused write).
		want string
	}{
		// Operators: a request with the API token may make the API's writes.
		{"operator client creates a deployment", clientOp, &state.CreateDeployment{Deployment: deployment}, ""},
		{"operator client updates a deployment", clientOp, &state.UpdateDeployment{Deployment: deployment}, ""},
		{"operator client deletes a deployment", clientOp, &state.DeleteDeployment{Namespace: "default", Name: "web"}, ""},
		{"operator client removes a node", clientOp, &state.RemoveNode{Name: "c2", At: time.Unix(1, 0)}, ""},
		{"operator client drains a node", clientOp, &state.SetNodeSchedule{Name: "c2", Schedule: api.NodeSchedule{Draining: true}}, ""},
		{"operator without a known role may still make the API's writes", noRoleOp, &state.CreateDeployment{Deployment: deployment}, ""},
		{"the token does not let a client set the cluster config", clientOp, &state.SetClusterConfig{}, onlyServers},
		{"the token does not let a client remove a deployment", clientOp, &state.RemoveDeployment{Namespace: "default", Name: "web"}, onlyServers},
		{"the token does not let a client place pods", clientOp, &state.PutPods{}, onlyServers},
		{"the token does not let a client register another node", clientOp, register("c2", "10.0.0.12", false), `it names node "c2"`},
		{"the token does not let a client report on another node", clientOp, statuses("c2", "default/on-c2"), `pods of node "c2"`},
		{"the token does not let a server upsert a node", serverOp, &state.UpsertNode{Node: api.Node{Name: "s1"}}, devOnly},

		// Servers: any fleet write, but only themselves and their pods.
		{"server creates a deployment", server, &state.CreateDeployment{Deployment: deployment}, ""},
		{"server removes a deployment", server, &state.RemoveDeployment{Namespace: "default", Name: "web"}, ""},
		{"server places pods", server, &state.PutPods{}, ""},
		{"server stops pods", server, &state.StopPods{IDs: []string{"default/on-c1"}}, ""},
		{"server sets the cluster config", server, &state.SetClusterConfig{}, ""},
		{"server sets a node status", server, &state.SetNodeStatus{Name: "c1", Status: api.NodeDown}, ""},
		{"server removes a node", server, &state.RemoveNode{Name: "c2", At: time.Unix(1, 0)}, ""},
		{"server registers itself", server, register("s1", "10.0.0.1", true), ""},
		{"server registers another node", server, register("c1", "10.0.0.11", false), `it names node "c1"; an agent registers only itself`},
		{"server registers itself as a client", server, register("s1", "10.0.0.1", false), "it registers as a client, but the certificate is a server's"},
		{"server registers itself at another address", server, register("s1", "10.0.0.2", true), `address "10.0.0.2" is not the address the certificate was issued for`},
		{"server reports on its own pods", server, statuses("s1", "default/on-s1"), ""},
		{"server reports on a client's pods", server, statuses("c1", "default/on-c1"), `may not write about the pods of node "c1"`},
		{"server reports on another node's pod as its own", server, statuses("s1", "default/on-c1"), `pod default/on-c1: it is placed on node "c1"`},
		{"server removes its own pods", server, &state.RemovePods{Node: "s1", IDs: []string{"default/on-s1"}}, ""},
		{"server removes another node's pods", server, &state.RemovePods{Node: "c1", IDs: []string{"default/on-c1"}}, `pods of node "c1"`},
		{"server removes pods of no node", server, &state.RemovePods{IDs: []string{"default/on-c1"}}, `pods of node ""`},
		{"server upserts a node", server, &state.UpsertNode{Node: api.Node{Name: "s1"}}, devOnly},
		{"server sets one pod status (old format)", server, &state.SetPodStatus{ID: "default/on-s1"}, devOnly},

		// Clients: register themselves, report on and remove their pods.
		{"client registers itself", client, register("c1", "10.0.0.11", false), ""},
		{"client registers another node", client, register("c2", "10.0.0.12", false), `it names node "c2"; an agent registers only itself`},
		{"client registers as a server", client, register("c1", "10.0.0.11", true), "it registers as a server, but the certificate is a client's"},
		{"client registers at another address", client, register("c1", "10.0.0.12", false), `address "10.0.0.12" is not the address the certificate was issued for`},
		{"client registers at an address that does not parse", client, register("c1", "c1.example", false), `address "c1.example" is not the address`},
		{"client reports on its own pods", client, statuses("c1", "default/on-c1"), ""},
		{"client reports on a pod the state no longer has", client, statuses("c1", "default/gone"), ""},
		{"client reports on another node", client, statuses("c2", "default/on-c2"), `may not write about the pods of node "c2": a node reports only on itself`},
		{"client reports on another node's pod as its own", client, statuses("c1", "default/on-c1", "default/on-c2"), `pod default/on-c2: it is placed on node "c2", not on c1`},
		{"client removes its own pods", client, &state.RemovePods{Node: "c1", IDs: []string{"default/on-c1"}}, ""},
		{"client removes another node's pods", client, &state.RemovePods{Node: "c2", IDs: []string{"default/on-c2"}}, `pods of node "c2"`},
		{"client removes another node's pod as its own", client, &state.RemovePods{Node: "c1", IDs: []string{"default/on-s1"}}, `placed on node "s1"`},
		{"client removes pods of no node", client, &state.RemovePods{IDs: []string{"default/on-c1"}}, `pods of node ""`},
		{"client creates a deployment", client, &state.CreateDeployment{Deployment: deployment}, onlyAPI},
		{"client creates a service", client, &state.CreateService{Service: api.Service{Namespace: "default", Name: "web"}}, onlyAPI},
		{"client deletes a service", client, &state.DeleteService{Namespace: "default", Name: "web"}, onlyAPI},
		{"operator client creates a service", clientOp, &state.CreateService{Service: api.Service{Namespace: "default", Name: "web"}}, ""},
		{"client creates an ingress", client, &state.CreateIngress{Ingress: api.Ingress{Namespace: "default", Name: "web"}}, onlyAPI},
		{"client updates an ingress", client, &state.UpdateIngress{Ingress: api.Ingress{Namespace: "default", Name: "web"}}, onlyAPI},
		{"client deletes an ingress", client, &state.DeleteIngress{Namespace: "default", Name: "web"}, onlyAPI},
		{"operator client creates an ingress", clientOp, &state.CreateIngress{Ingress: api.Ingress{Namespace: "default", Name: "web"}}, ""},
		{"client updates a deployment", client, &state.UpdateDeployment{Deployment: deployment}, onlyAPI},
		{"client deletes a deployment", client, &state.DeleteDeployment{Namespace: "default", Name: "web"}, onlyAPI},
		{"client removes a node", client, &state.RemoveNode{Name: "c2", At: time.Unix(1, 0)}, onlyAPI},
		{"client cordons a node", client, &state.SetNodeSchedule{Name: "c2", Schedule: api.NodeSchedule{Unschedulable: true}}, onlyAPI},
		{"client uncordons itself", client, &state.SetNodeSchedule{Name: "c1"}, onlyAPI},
		{"client removes a deployment", client, &state.RemoveDeployment{Namespace: "default", Name: "web"}, onlyServers},
		{"client sets the cluster config", client, &state.SetClusterConfig{}, onlyServers},
		{"client sets a node status", client, &state.SetNodeStatus{Name: "c1", Status: api.NodeReady}, onlyServers},
		{"client places pods", client, &state.PutPods{}, onlyServers},
		{"client stops pods", client, &state.StopPods{IDs: []string{"default/on-c2"}}, onlyServers},
		{"client upserts a node", client, &state.UpsertNode{Node: api.Node{Name: "c1", Address: "10.0.0.11"}}, "written by a single dev agent only"},
		{"client sets one pod status (old format)", client, &state.SetPodStatus{ID: "default/on-c1"}, "written by a single dev agent only"},

		// A certificate without a known role may do nothing without the token.
		{"no role registers itself", noRole, register("x1", "10.0.0.99", false), "its certificate has no known role"},
		{"no role reports on pods", noRole, statuses("x1"), "its certificate has no known role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Authorize(tt.caller, tt.cmd, view)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("allowed; want refused with %q", tt.want)
			}
			if !errors.Is(err, state.ErrForbidden) {
				t.Errorf("error %v does not wrap state.ErrForbidden", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			// Who was refused, so an operator can tell which agent misbehaves.
			if !strings.Contains(msg, tt.caller.Identity.Name+" ("+tt.caller.Identity.Role+" certificate)") {
				t.Errorf("error %q does not name the caller %s", msg, tt.caller)
			}
			// What was refused, when the refusal is about the write's type.
			if !strings.Contains(msg, "about") && !strings.Contains(msg, tt.cmd.Type().String()) {
				t.Errorf("error %q does not name the write %s", msg, tt.cmd.Type())
			}
		})
	}
}

func TestCallerString(t *testing.T) {
	if got, want := clientOp.String(), "c1 (client certificate) with the API token"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := server.String(), "s1 (server certificate)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestToken(t *testing.T) {
	ctx := context.Background()
	if got := Token(ctx); got != "" {
		t.Errorf("Token of a bare context = %q, want empty", got)
	}
	if got := Token(WithToken(ctx, "s3cret")); got != "s3cret" {
		t.Errorf("Token = %q, want s3cret", got)
	}
}
