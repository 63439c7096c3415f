// Package authz decides who may write what to the replicated state, as
// Kubernetes' node authorizer and Nomad's RPC endpoints do: a write that
// another agent sends over the agents' RPC is checked here, against the
// identity in the sender's certificate and the API token the request
// carries, before anything is proposed to raft.
//
// The rules:
//   - An operator (a request with the API token: a write the agent that
//     took it forwards to the leader) may create, update and delete
//     deployments and remove nodes.
//   - A server may make any write the fleet's own loops make: it holds the
//     CA key, so it is as trusted as the cluster.
//   - A client may register only itself (its certificate's name, at its
//     certificate's address, as a client) and report on or remove only the
//     pods placed on itself.
//
// Everything else is refused with an error that wraps state.ErrForbidden
// and says what was refused and why. The package is pure: it reads the
// state through View and decides; it must not write.
package authz

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Caller is who sent a write over the agents' RPC.
type Caller struct {
	// Identity is the sender's verified, unrevoked certificate.
	Identity pki.Identity
	// Operator is true when the request carried a valid API token: an
	// operator's write that the sending agent took on its API.
	Operator bool
}

func (c Caller) String() string {
	s := c.Identity.Name + " (" + c.Identity.Role + " certificate)"
	if c.Operator {
		s += " with the API token"
	}
	return s
}

// View is what authorization reads of the state.
type View interface {
	Node(name string) (api.Node, bool)
	// PodNodes returns the node each known pod ID is placed on.
	PodNodes(ids []string) map[string]string
}

// Authorize decides whether c may write cmd. It returns nil to allow, or
// an error wrapping state.ErrForbidden.
func Authorize(c Caller, cmd state.Command, v View) error {
	if c.Operator && operatorWrite(cmd) {
		return nil
	}
	role := c.Identity.Role
	if role != pki.RoleServer && role != pki.RoleClient {
		return refuse(c, cmd, "its certificate has no known role")
	}
	// What a node writes about itself: the same rules for either role.
	switch cmd := cmd.(type) {
	case *state.RegisterNode:
		return registerSelf(c, &cmd.Node)
	case *state.SetPodStatuses:
		return ownPods(c, cmd, cmd.Node, ids(cmd.Updates), v)
	case *state.RemovePods:
		return ownPods(c, cmd, cmd.Node, cmd.IDs, v)
	case *state.UpsertNode, *state.SetPodStatus:
		return refuse(c, cmd, "it is written by a single dev agent only, never sent between agents")
	}
	switch {
	case role == pki.RoleServer:
		return nil
	case operatorWrite(cmd):
		return refuse(c, cmd, "it comes only from the API with the API token, or from a server")
	}
	return refuse(c, cmd, "only servers make it; a client agent registers itself and reports on its own pods only")
}

// operatorWrite reports whether cmd is a write the API makes.
func operatorWrite(cmd state.Command) bool {
	switch cmd.(type) {
	case *state.CreateDeployment, *state.UpdateDeployment, *state.DeleteDeployment, *state.RemoveNode, *state.SetNodeSchedule,
		*state.CreateService, *state.UpdateService, *state.DeleteService,
		*state.CreateIngress, *state.UpdateIngress, *state.DeleteIngress:
		return true
	}
	return false
}

// registerSelf: an agent registers only itself, at the address its
// certificate was issued for, in the role its certificate carries.
func registerSelf(c Caller, n *api.Node) error {
	id := c.Identity
	if n.Name != id.Name {
		return refuse(c, &state.RegisterNode{Node: *n}, fmt.Sprintf("it names node %q; an agent registers only itself", n.Name))
	}
	if n.Server != (id.Role == pki.RoleServer) {
		return refuse(c, &state.RegisterNode{Node: *n}, fmt.Sprintf("it registers as a %s, but the certificate is a %s's", n.Role(), id.Role))
	}
	ip := net.ParseIP(n.Address)
	if ip == nil || !slices.ContainsFunc(id.IPs, ip.Equal) {
		return refuse(c, &state.RegisterNode{Node: *n}, fmt.Sprintf("address %q is not the address the certificate was issued for (%v)", n.Address, id.IPs))
	}
	return nil
}

// ownPods: a node writes only about itself and the pods placed on it.
// IDs the state does not know pass: the pod may have been removed while
// the node reported on it, and the FSM ignores them.
func ownPods(c Caller, cmd state.Command, node string, podIDs []string, v View) error {
	if node != c.Identity.Name {
		return forbidden("%s may not write about the pods of node %q: a node reports only on itself (refused: %s)", c, node, cmd.Type())
	}
	for id, on := range v.PodNodes(podIDs) {
		if on != node {
			return forbidden("%s may not write about pod %s: it is placed on node %q, not on %s (refused: %s)", c, id, on, node, cmd.Type())
		}
	}
	return nil
}

func ids(us []state.PodStatusUpdate) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.ID
	}
	return out
}

func refuse(c Caller, cmd state.Command, why string) error {
	return forbidden("%s may not %s: %s", c, cmd.Type(), why)
}

func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", state.ErrForbidden, fmt.Sprintf(format, args...))
}

type tokenKey struct{}

// WithToken returns ctx carrying the API token a request came with, so a
// write the agent forwards to the leader carries it too.
func WithToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// Token returns the API token ctx carries, or "".
func Token(ctx context.Context) string {
	t, _ := ctx.Value(tokenKey{}).(string)
	return t
}
