// Package membership tells each agent which other agents make up the fleet,
// with hashicorp/memberlist (SWIM gossip, LAN defaults, encrypted with the
// cluster's gossip key).
//
// Each agent publishes a small Meta (role, capacity, labels, API/RPC/raft
// addresses) with its gossip identity; every agent sees every other one's.
// A member that stops answering is suspected and then marked failed within
// seconds (memberlist's probe and suspicion timers); one that leaves with
// Leave is gone at once.
//
// The files:
//
//   - config.go: Config, DefaultConfig and validation; the memberlist.Config
//     built from it.
//   - meta.go: Meta and its compact wire form (memberlist caps it at 512 bytes).
//   - membership.go: Membership: Start, Join, Members, Events, UpdateMeta,
//     Leave, Shutdown, and the retry-join loop.
//   - members.go: the member table fed by memberlist's delegates, which
//     tells a failed member from one that left.
//   - queue.go: the event queue that keeps a slow reader from blocking gossip.
//   - log.go: the bridge from memberlist's *log.Logger to slog.
//
// Failed versus left. memberlist v0.7 tracks StateDead and StateLeft but does
// not show them: the Node handed to NotifyLeave always has State StateAlive
// (hashicorp/memberlist#293; #321 would fix it). So, as serf does with its
// leave intents, a member that leaves first sends every peer a small user
// message (one UDP packet each, encrypted like all gossip), then leaves. A
// peer that hears the member is gone within 30 s of that message records it
// as left, and one that hears the message just after marking the member
// failed turns the failure into a leave; without the message it is failed.
//
// The package must not decide anything about raft, scheduling or routes: it
// reports who is there, and the agent's fleet loop acts on it. It imports no
// other agent package.
package membership
