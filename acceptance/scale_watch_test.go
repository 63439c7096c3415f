package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// rpcPort is the servers' agent-to-agent port (the agent's default; the
// lab does not change it).
const rpcPort = "7403"

// watchRecorder watches the servers' state with one client node's own
// certificate, as that node's agent does (rpc.Client.Watch, resuming from
// the last index, moving to the next server on an error), and records
// every answer, so a test can check what the node was told and in what
// order. It applies answers without the agent's own defences (it never
// drops an event as older), so what it holds is what the servers sent.
type watchRecorder struct {
	node  string
	rc    *rpc.Client
	addrs []string
	wait  time.Duration

	mu       sync.Mutex
	index    uint64
	answers  int
	byServer map[string]int
	failures int
	lastErr  error
	events   []recordedEvent
	resets   []recordedReset
	view     map[viewKey]rpc.WatchEvent
	// faults are answers that broke the watch's contract as they came.
	faults []string
}

type viewKey struct{ kind, key string }

func (k viewKey) String() string { return k.kind + " " + k.key }

// recordedEvent is one event as it came, with the index of its answer.
type recordedEvent struct {
	answer uint64
	ev     rpc.WatchEvent
}

// recordedReset is an answer that carried the whole view.
type recordedReset struct {
	index uint64
	keys  map[viewKey]bool
}

// newWatchRecorder watches as n (its <data-dir>/tls/node.pem) through the
// servers in order (every server of f if none are given), asking each
// watch to wait up to wait.
func newWatchRecorder(f *fleet, n *fleetNode, wait time.Duration, servers ...*fleetNode) (*watchRecorder, error) {
	dir := filepath.Join(n.dataDir, "tls")
	certPEM, err := os.ReadFile(filepath.Join(dir, "node.pem"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "node-key.pem"))
	if err != nil {
		return nil, err
	}
	kp, err := pki.NewKeypair(f.caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if id := kp.Identity(); id.Name != n.Name || id.Role != pki.RoleClient {
		return nil, fmt.Errorf("%s's certificate names %s", n.Name, id)
	}
	w := &watchRecorder{node: n.Name, rc: rpc.NewClient(kp, 10*time.Second), wait: wait,
		byServer: map[string]int{}, view: map[viewKey]rpc.WatchEvent{}}
	if len(servers) == 0 {
		for _, s := range f.nodes {
			if s.server {
				servers = append(servers, s)
			}
		}
	}
	for _, s := range servers {
		w.addrs = append(w.addrs, net.JoinHostPort(s.IP.String(), rpcPort))
	}
	return w, nil
}

// start runs the watch until the returned stop is called; stop waits for
// it and may be called again.
func (w *watchRecorder) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	return sync.OnceFunc(func() { cancel(); <-done; w.rc.CloseIdleConnections() })
}

func (w *watchRecorder) run(ctx context.Context) {
	i := 0
	for ctx.Err() == nil {
		addr := w.addrs[i%len(w.addrs)]
		resp, err := w.rc.Watch(ctx, addr, w.Index(), w.wait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.mu.Lock()
			w.failures++
			w.lastErr = err
			w.mu.Unlock()
			i++
			select { // a retry's pause, as the agent's backoff
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		w.apply(addr, resp)
		if resp.Leader == "" && len(resp.Events) == 0 && !resp.Reset {
			i++ // a server that knows no leader may be cut off: the agent asks another
		}
	}
}

func (w *watchRecorder) apply(addr string, r rpc.WatchResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.answers++
	w.byServer[addr]++
	if r.Index < w.index {
		w.faults = append(w.faults, fmt.Sprintf("%s answered at index %d, before the %d asked from (reset %v)", addr, r.Index, w.index, r.Reset))
	}
	if r.Reset {
		clear(w.view)
		rr := recordedReset{index: r.Index, keys: map[viewKey]bool{}}
		for _, ev := range r.Events {
			rr.keys[viewKey{ev.Kind, ev.Key}] = true
		}
		w.resets = append(w.resets, rr)
	}
	var prev uint64
	for _, ev := range r.Events {
		if ev.Index < prev || ev.Index > r.Index {
			w.faults = append(w.faults, fmt.Sprintf("%s: event %s at index %d out of order in an answer at %d (previous event at %d)", addr, viewKey{ev.Kind, ev.Key}, ev.Index, r.Index, prev))
		}
		prev = ev.Index
		w.events = append(w.events, recordedEvent{answer: r.Index, ev: ev})
		if k := (viewKey{ev.Kind, ev.Key}); ev.Deleted {
			delete(w.view, k)
		} else {
			w.view[k] = ev
		}
	}
	w.index = max(w.index, r.Index)
}

// Index is the index the next watch asks from.
func (w *watchRecorder) Index() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.index
}

func (w *watchRecorder) stats() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d answers (by server %v), %d events, %d whole views, %d failed calls (last: %v), at index %d",
		w.answers, w.byServer, len(w.events), len(w.resets), w.failures, w.lastErr, w.index)
}

// failed counts the watch calls that failed.
func (w *watchRecorder) failed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failures
}

// orderErrors checks the order of what the servers sent: answers never go
// back in index, events within an answer come in index order and none
// past its answer, and, per object, the index of the change it was told
// never goes backwards, over the whole run, across servers and failovers.
func (w *watchRecorder) orderErrors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	errs := append([]string(nil), w.faults...)
	last := map[viewKey]uint64{}
	for _, re := range w.events {
		k := viewKey{re.ev.Kind, re.ev.Key}
		if re.ev.Index < last[k] {
			errs = append(errs, fmt.Sprintf("%s: told of its change at index %d after one at %d (answer at %d)", k, re.ev.Index, last[k], re.answer))
		}
		last[k] = max(last[k], re.ev.Index)
	}
	return errs
}

// sawAtOrAfter reports whether the watch told of k at index min or later:
// an event of k (for a deleted object, its deletion), or, for a deleted
// object, a whole view without it.
func (w *watchRecorder) sawAtOrAfter(k viewKey, from uint64, deleted bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, re := range w.events {
		if re.ev.Kind == k.kind && re.ev.Key == k.key && re.ev.Index >= from && (!deleted || re.ev.Deleted) {
			return true
		}
	}
	if deleted {
		for _, rr := range w.resets {
			if rr.index >= from && !rr.keys[k] {
				return true
			}
		}
	}
	return false
}

// pods returns the pods of the watched view, by ID.
func (w *watchRecorder) pods() map[string]api.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]api.Pod{}
	for k, ev := range w.view {
		if k.kind == rpc.WatchPod && ev.Pod != nil {
			out[k.key] = *ev.Pod
		}
	}
	return out
}

// nodes returns the nodes of the watched view, by name.
func (w *watchRecorder) nodes() map[string]api.Node {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]api.Node{}
	for k, ev := range w.view {
		if k.kind == rpc.WatchNode && ev.Node != nil {
			out[k.key] = *ev.Node
		}
	}
	return out
}

// podsNotOn returns the pods of every event so far that were placed on
// another node than the watched one.
func (w *watchRecorder) podsNotOn(node string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, re := range w.events {
		if p := re.ev.Pod; p != nil && p.Node != node {
			out = append(out, p.ID()+" on "+p.Node)
		}
	}
	return out
}

// diffView compares the watched view with what a server's API says: the
// pods placed on the watched node and every node, compared as JSON.
func (w *watchRecorder) diffView(ctx context.Context, via *fleetNode) error {
	pods, err := via.client.ListPods(ctx, api.DefaultNamespace, "")
	if err != nil {
		return err
	}
	nodes, err := via.client.ListNodes(ctx)
	if err != nil {
		return err
	}
	wantPods := map[string]api.Pod{}
	for _, p := range pods {
		if p.Node == w.node {
			wantPods[p.ID()] = p
		}
	}
	wantNodes := map[string]api.Node{}
	for _, n := range nodes {
		wantNodes[n.Name] = n
	}
	var diffs []string
	diffs = append(diffs, diffJSON("pod", wantPods, w.pods())...)
	diffs = append(diffs, diffJSON("node", wantNodes, w.nodes())...)
	if len(diffs) > 0 {
		return fmt.Errorf("the watched view (index %d) differs from %s's API:\n%s", w.Index(), via.Name, strings.Join(diffs, "\n"))
	}
	return nil
}

func diffJSON[T any](kind string, want, got map[string]T) []string {
	var out []string
	for k, wv := range want {
		gv, ok := got[k]
		if !ok {
			out = append(out, fmt.Sprintf("  %s %s: missing from the view", kind, k))
			continue
		}
		wj, _ := json.Marshal(wv)
		gj, _ := json.Marshal(gv)
		if string(wj) != string(gj) {
			out = append(out, fmt.Sprintf("  %s %s:\n    API  %s\n    view %s", kind, k, wj, gj))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("  %s %s: in the view, not in the API", kind, k))
		}
	}
	sort.Strings(out)
	return out
}

// podPoller polls a server's API for the pods of one node and records each
// change it sees, with a lower bound of the change's raft index: a change
// seen by poll i was not there at poll i-1, whose list the server answered
// at an index at least the one its GET /v1/status gave just before, so the
// change's index is above that.
type podPoller struct {
	via  *fleetNode
	node string

	mu          sync.Mutex
	polls, errs int
	last        map[string]string
	transitions []podTransition
}

type podTransition struct {
	id    string
	state string // podState, or "gone"
	after uint64 // the change's raft index is greater
}

func podState(p api.Pod) string {
	return fmt.Sprintf("%s ready=%v stop=%v ip=%s", p.Status.Phase, p.Status.Ready, p.Stop, p.Status.IP)
}

func newPodPoller(via *fleetNode, node string) *podPoller {
	return &podPoller{via: via, node: node, last: map[string]string{}}
}

// start polls every 100 ms until the returned stop is called (it may be
// called again).
func (p *podPoller) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var before uint64 // the status index before the last successful list
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if b, err := p.poll(ctx, before); err == nil {
				before = b
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return sync.OnceFunc(func() { cancel(); <-done })
}

func (p *podPoller) poll(ctx context.Context, prevBefore uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := p.via.client.Status(ctx)
	if err == nil {
		var pods []api.Pod
		if pods, err = p.via.client.ListPods(ctx, api.DefaultNamespace, ""); err == nil {
			p.record(pods, prevBefore)
			return st.Index, nil
		}
	}
	p.mu.Lock()
	p.errs++
	p.mu.Unlock()
	return 0, err
}

func (p *podPoller) record(pods []api.Pod, after uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls++
	now := map[string]string{}
	for _, pod := range pods {
		if pod.Node == p.node {
			now[pod.ID()] = podState(pod)
		}
	}
	for id, s := range now {
		if p.last[id] != s {
			p.transitions = append(p.transitions, podTransition{id: id, state: s, after: after})
		}
	}
	for id := range p.last {
		if _, ok := now[id]; !ok {
			p.transitions = append(p.transitions, podTransition{id: id, state: "gone", after: after})
		}
	}
	p.last = now
}

// missedBy returns the transitions w was not told of at or after their index.
func (p *podPoller) missedBy(w *watchRecorder) (missed []string, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, tr := range p.transitions {
		if !w.sawAtOrAfter(viewKey{rpc.WatchPod, tr.id}, tr.after+1, tr.state == "gone") {
			missed = append(missed, fmt.Sprintf("%s became %q after index %d", tr.id, tr.state, tr.after))
		}
	}
	return missed, len(p.transitions)
}

func (p *podPoller) stats() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d polls (%d failed), %d changes of %s's pods seen", p.polls, p.errs, len(p.transitions), p.node)
}
