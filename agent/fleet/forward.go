package fleet

import (
	"context"
	"fmt"

	"github.com/flotilla-io/flotilla/agent/authz"
	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
)

// Members is what the fleet reads of membership.
type Members interface {
	Members() []membership.Member
}

// serverLister is Members that lists the alive servers alone
// (membership.Membership): at a thousand members, copying them all to pick
// a server was a tenth of a simulated fleet's CPU.
type serverLister interface {
	Servers() []membership.Member
}

// Writer sends a typed write to the leader's RPC endpoint (rpc.Client).
type Writer interface {
	Write(ctx context.Context, addr, leader string, cmd state.Command, token string) (store.Reply, error)
}

// Forwarder is the store's Forwarder in a fleet: it finds the leader's RPC
// address in the membership metadata and sends the write there over mTLS,
// with the API token of the operator request it comes from, if any. The
// address comes from gossip, which anyone with the gossip key can speak;
// the RPC client checks that the certificate at it is the leader's.
type Forwarder struct {
	Members Members
	Client  Writer
}

var _ store.Forwarder = (*Forwarder)(nil)

// Forward implements store.Forwarder.
func (f *Forwarder) Forward(ctx context.Context, leaderID string, cmd state.Command) (store.Reply, error) {
	for _, m := range f.Members.Members() {
		if m.Name == leaderID && m.Meta.RPCAddr != "" && m.Status == membership.StatusAlive {
			return f.Client.Write(ctx, m.Meta.RPCAddr, leaderID, cmd, authz.Token(ctx))
		}
	}
	return store.Reply{}, fmt.Errorf("leader %q is not in this agent's membership list yet: %w", leaderID, state.ErrNotLeader)
}

// ServerRPCAddrs returns the RPC addresses of the alive server members,
// then fallback (the retry-join addresses): where to join, renew and ask
// about raft.
func ServerRPCAddrs(members Members, fallback []string) []string {
	var out []string
	seen := map[string]bool{}
	list := members.Members
	if s, ok := members.(serverLister); ok {
		list = s.Servers
	}
	for _, m := range list() {
		if m.Meta.Role == membership.RoleServer && m.Status == membership.StatusAlive && m.Meta.RPCAddr != "" && !seen[m.Meta.RPCAddr] {
			seen[m.Meta.RPCAddr] = true
			out = append(out, m.Meta.RPCAddr)
		}
	}
	for _, a := range fallback {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
