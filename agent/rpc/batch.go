package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
)

// Forwarded writes travel in batches: one HTTPS request to the leader
// carries every write queued while earlier requests were in flight, and
// the leader proposes them together (raft commits them in one round).
// Under load that turns a request, a TLS record each way and a goroutine
// on both agents per write into one per batch; with one writer, a batch is
// one write and nothing waits. etcd's followers likewise forward proposals
// to the leader in batches over one stream rather than a call each.
const (
	// maxBatchesInFlight is how many requests to one leader may be in
	// flight at once: enough that a write rarely waits for a whole round
	// trip, few enough that writes under load do batch.
	maxBatchesInFlight = 4
	// maxBatchWrites and maxBatchBytes bound one request; the server
	// refuses more.
	maxBatchWrites = 256
	maxBatchBytes  = 2 << 20
)

// batchRequest is the body of POST /rpc/v1/writes.
type batchRequest struct {
	Writes []batchWrite `json:"writes"`
}

// batchWrite is one typed write: its type's name and the command's JSON.
type batchWrite struct {
	Type string          `json:"type"`
	Body json.RawMessage `json:"body"`
}

// batchReply answers a batchRequest: one Reply per write, in order.
type batchReply struct {
	Replies []store.Reply `json:"replies"`
}

// batchKey is what writes must share to travel together: the leader they
// go to and the API token they carry.
type batchKey struct{ addr, leader, token string }

// pendingWrite is a write waiting in a batcher.
type pendingWrite struct {
	w    batchWrite
	done chan batchResult // buffered: the batcher never blocks on it
}

type batchResult struct {
	reply store.Reply
	err   error
}

// batcher queues the writes for one batchKey and sends them.
type batcher struct {
	c   *Client
	key batchKey

	mu       sync.Mutex
	queue    []*pendingWrite
	inflight int
}

func (c *Client) batcher(k batchKey) *batcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batches == nil {
		c.batches = map[batchKey]*batcher{}
	}
	b := c.batches[k]
	if b == nil {
		b = &batcher{c: c, key: k}
		c.batches[k] = b
	}
	return b
}

// submit queues p and makes sure a sender will take it.
func (b *batcher) submit(p *pendingWrite) {
	b.mu.Lock()
	b.queue = append(b.queue, p)
	start := b.inflight < maxBatchesInFlight
	if start {
		b.inflight++
	}
	b.mu.Unlock()
	if start {
		go b.send()
	}
}

// send sends batches until the queue is empty.
func (b *batcher) send() {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(b.queue) && n < maxBatchWrites && (n == 0 || size+len(b.queue[n].w.Body) <= maxBatchBytes) {
			size += len(b.queue[n].w.Body)
			n++
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		b.mu.Unlock()
		replies, err := b.c.sendBatch(b.key, batch)
		for i, p := range batch {
			if err != nil {
				p.done <- batchResult{err: err}
			} else {
				p.done <- batchResult{reply: replies[i]}
			}
		}
	}
}

// sendBatch sends one batch and returns a Reply per write, or why no
// answer came (then none of them may or may not have been applied).
func (c *Client) sendBatch(k batchKey, batch []*pendingWrite) ([]store.Reply, error) {
	op := fmt.Sprintf("forward %d writes to leader %s at %s", len(batch), k.leader, k.addr)
	if len(batch) == 1 {
		op = fmt.Sprintf("forward %s to leader %s at %s", batch[0].w.Type, k.leader, k.addr)
	}
	req := batchRequest{Writes: make([]batchWrite, len(batch))}
	for i, p := range batch {
		req.Writes[i] = p.w
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	// Not any one caller's context: the batch is everyone's. Callers stop
	// waiting when theirs ends; the request ends at the client's timeout.
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	hreq, err := c.newRequest(ctx, op, http.MethodPost, k.addr, pathWrites, body)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if k.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+k.token)
	}
	code, respBody, peer, err := c.do(hreq, op, k.addr)
	if err != nil {
		return nil, err
	}
	if k.leader != "" && peer.Name != k.leader {
		// The address came from gossip; the certificate says who answered.
		return nil, fmt.Errorf("%s: the server there is %s, not the leader; retry once membership has caught up", op, peer)
	}
	var reply batchReply
	if err := json.Unmarshal(respBody, &reply); err == nil && code == http.StatusOK && len(reply.Replies) == len(batch) {
		return reply.Replies, nil
	}
	// A refusal of the whole request (no certificate, a wrong token)
	// comes as one Reply that stands for every write.
	var one store.Reply
	if err := json.Unmarshal(respBody, &one); err == nil && one.Error != nil {
		out := make([]store.Reply, len(batch))
		for i := range out {
			out[i] = one
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: unreadable answer (HTTP %d): %s", op, code, snippet(respBody))
}

// Write forwards a typed write to the leader, the server named leader at
// addr (host:port of its RPC server), and returns its Reply once the leader
// has committed and applied it, or why it did not. token, when not empty,
// is the API token of the operator request the write comes from. An empty
// leader sends to whichever server is at addr (a follower answers
// ErrNotLeader): for an agent that does not know the leader yet. Writes
// made at the same time travel in one request (see maxBatchesInFlight). An
// error means no Reply came back: the write may or may not have been
// applied.
func (c *Client) Write(ctx context.Context, addr, leader string, cmd state.Command, token string) (store.Reply, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return store.Reply{}, fmt.Errorf("forward %s to leader %s: %w", cmd.Type(), leader, err)
	}
	if addr == "" {
		return store.Reply{}, fmt.Errorf("forward %s: %w; no leader address is known yet, retry shortly", cmd.Type(), state.ErrNotLeader)
	}
	p := &pendingWrite{w: batchWrite{Type: cmd.Type().String(), Body: body}, done: make(chan batchResult, 1)}
	c.batcher(batchKey{addr: addr, leader: leader, token: token}).submit(p)
	select {
	case r := <-p.done:
		return r.reply, r.err
	case <-ctx.Done():
		return store.Reply{}, fmt.Errorf("forward %s to leader %s at %s: %w; the write may still be applied", cmd.Type(), leader, addr, ctx.Err())
	}
}
