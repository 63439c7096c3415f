package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Watches (GET /rpc/v1/watch, watch_wire.go): how a client agent reads
// the state without holding it. Any server answers from its own replica:
// raft indexes are the same on every replica, so a watcher resumes from
// the index of its last answer after a reconnect or a failover, and a
// server that has not applied that index yet waits for it before it
// answers. Who asks is who is watched: a certificate reads the view of the
// node it names, nothing else.

const (
	// defaultWatchWait is how long a watch blocks when it does not say.
	defaultWatchWait = 30 * time.Second
	// maxWatchWait bounds the wait a watch may ask for.
	maxWatchWait = 5 * time.Minute
	// A watch waits up to wait/watchJitterFraction longer, at random, so
	// that the watches of a fleet that started together (after a server
	// restart) do not all answer together again (Nomad's blocking queries
	// do the same).
	watchJitterFraction = 16
	// watchSlack is the time past its wait a watch's answer has to be
	// written and read.
	watchSlack = 15 * time.Second
	// watchHeaderSlack is the time past its wait (and jitter) a watch's
	// answer has to start arriving: the server writes it at once then (a
	// change to other nodes is held back up to 1 s). A call on a
	// connection that died (a cable pulled and put back: TCP's
	// retransmissions have backed off to seconds) is given up then rather
	// than after the full watchSlack, which is for reading a large answer.
	watchHeaderSlack = 3 * time.Second
	// maxWatchResponse bounds what a client reads of one answer: a whole
	// view is up to api.MaxPodsPerNode pods and every node of the fleet.
	maxWatchResponse = 64 << 20
	// maxWatchesPerNode bounds the watches one node has waiting on a
	// server. A client agent keeps one; a few more cover a restart whose
	// old connection has not closed yet. Beyond it, a certificate taken
	// from one VM could hold a goroutine and a full view per request.
	maxWatchesPerNode = 4
	// watchCoalesce is how long a watch woken by a change to the nodes or
	// the cluster config, not to the watcher's own pods, waits for more
	// before it answers. Every watch of the fleet wakes at such a change:
	// a thousand nodes joining would otherwise be a million answers, one
	// per node per join. Routes then follow a second later at most, as
	// kube-proxy's rules do by its default minimum sync period; the
	// watcher's own pods still answer at once.
	watchCoalesce = time.Second
	// endpointsCoalesce is the same wait for a watch woken by a service or
	// its endpoints: a pod that dies or fails readiness must leave the
	// rotation on every node within about a second, wait included.
	endpointsCoalesce = 100 * time.Millisecond
)

// watchSlots counts the watches each node has waiting.
type watchSlots struct {
	mu sync.Mutex
	n  map[string]int
}

// take reserves a slot for node; false when it has maxWatchesPerNode.
func (w *watchSlots) take(node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[node] >= maxWatchesPerNode {
		return false
	}
	if w.n == nil {
		w.n = map[string]int{}
	}
	w.n[node]++
	return true
}

func (w *watchSlots) give(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n[node]--; w.n[node] <= 0 {
		delete(w.n, node)
	}
}

var _ Backend = (*store.Store)(nil)

// watchHandler returns the handler of GET /rpc/v1/watch. Watches waiting
// when the server shuts down answer at once, so that Shutdown does not
// wait their wait out and the watchers go to another server. Call it once
// s.http exists.
func (s *Server) watchHandler() http.HandlerFunc {
	stop := make(chan struct{})
	var once sync.Once // Shutdown may be called more than once
	s.http.RegisterOnShutdown(func() { once.Do(func() { close(stop) }) })
	return func(w http.ResponseWriter, r *http.Request) { s.watch(w, r, stop) }
}

// watch answers once the caller's view changed after since, or when its
// wait has passed.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
	id, ok := s.caller(w, r, "watch")
	if !ok {
		return
	}
	since, wait, err := parseWatchQuery(r.URL.Query())
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "watch: "+err.Error())
		return
	}
	if !s.watches.take(id.Name) {
		s.refuse(w, r, http.StatusTooManyRequests, fmt.Sprintf("watch: %s already has %d watches waiting on this server; an agent keeps one, retry once one answered", id.Name, maxWatchesPerNode))
		return
	}
	defer s.watches.give(id.Name)
	if wait > 0 {
		wait += rand.N(wait/watchJitterFraction + 1)
	}
	// The server's write timeout suits writes, which answer within
	// ApplyTimeout; a watch answers later. (Its read deadline is cleared
	// while the handler runs.)
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + watchSlack)); err != nil {
		s.log.Warn("a watch cannot extend its write deadline; it may be cut off", "err", err)
	}

	deadline := time.Now().Add(wait)
	now, changed, err := s.waitView(r.Context(), id.Name, since, wait, stop)
	if err != nil {
		return // the watcher went away
	}
	if changed && since > 0 && s.cfg.Backend.PodsChanged(id.Name) <= since {
		linger := watchCoalesce
		if s.cfg.Backend.ServicesChanged() > since {
			linger = endpointsCoalesce
		}
		linger = min(linger, time.Until(deadline))
		select {
		case <-time.After(linger):
		case <-stop:
		case <-r.Context().Done():
			return
		}
	}
	// A node removed while its watch waited reads nothing more.
	if _, ok := s.caller(w, r, "watch"); !ok {
		return
	}
	// A lagging server says where the watcher is: ask again from there.
	resp := WatchResponse{Index: max(now, since), Leader: s.cfg.Backend.LeaderID()}
	if changed {
		changes, reset, now := s.cfg.Backend.NodeView(id.Name, since)
		resp.Index, resp.Reset = now, reset
		resp.Events = make([]WatchEvent, len(changes))
		for i, c := range changes {
			// The same fields: the conversion fails to compile if
			// either type changes alone.
			resp.Events[i] = WatchEvent(c)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// waitView blocks until node's view changed after since, wait has passed
// or stop is closed, and returns the index the state was at and whether
// the view changed. It fails only when ctx ends.
func (s *Server) waitView(ctx context.Context, node string, since uint64, wait time.Duration, stop <-chan struct{}) (uint64, bool, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		now, changed, wake := s.cfg.Backend.WatchNodeView(node, since)
		if changed {
			return now, true, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return now, false, nil
		case <-stop:
			return now, false, nil
		case <-ctx.Done():
			return now, false, ctx.Err()
		}
	}
}

// parseWatchQuery reads since (default 0) and wait (default 30s, at most
// 5m) of a watch.
func parseWatchQuery(q url.Values) (since uint64, wait time.Duration, err error) {
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("since %q is not a raft index", api.TruncateText(v, 40))
		}
	}
	wait = defaultWatchWait
	if v := q.Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil {
			return 0, 0, fmt.Errorf("wait %q is not a duration such as 30s", api.TruncateText(v, 40))
		}
	}
	return since, min(max(wait, 0), maxWatchWait), nil
}

// Unwrap lets http.ResponseController reach the connection through the
// request log's recorder: a watch extends its deadlines so.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Watch asks the server at addr what changed in this node's view (its
// pods, every node, the cluster config) after index since: 0 asks for the
// whole view. The server answers once something did, or after wait (0
// answers at once; at most 5 minutes), with the index to ask from next.
// Apply the events in order, dropping everything first on Reset.
//
// Any server answers (raft indexes are the same on all), so after an
// error ask another one from the same index. The call is bounded by wait
// and a margin, not by the client's timeout. A refused certificate (401,
// 403: revoked, say) fails with an error wrapping state.ErrForbidden:
// retrying will not help.
func (c *Client) Watch(ctx context.Context, addr string, since uint64, wait time.Duration) (WatchResponse, error) {
	op := "watch the state via server at " + addr
	wait = min(max(wait, 0), maxWatchWait)
	ctx, cancel := context.WithTimeout(ctx, wait+wait/watchJitterFraction+watchSlack)
	defer cancel()
	q := url.Values{"since": {strconv.FormatUint(since, 10)}, "wait": {wait.String()}}
	req, err := c.newRequest(ctx, op, http.MethodGet, addr, pathWatch+"?"+q.Encode(), nil)
	if err != nil {
		return WatchResponse{}, err
	}
	// The same transport (connections, certificate), without the timeout
	// meant for writes, which would cut a watch short.
	hc := &http.Client{Transport: c.http.Transport, CheckRedirect: c.http.CheckRedirect}
	noHeader := time.AfterFunc(wait+wait/watchJitterFraction+watchHeaderSlack, cancel)
	resp, err := hc.Do(req)
	noHeader.Stop()
	if err != nil {
		return WatchResponse{}, transportError(ctx, op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWatchResponse+1))
	if err != nil {
		return WatchResponse{}, transportError(ctx, op, err)
	}
	if len(body) > maxWatchResponse {
		return WatchResponse{}, fmt.Errorf("%s: the answer is larger than %d bytes", op, maxWatchResponse)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return WatchResponse{}, fmt.Errorf("%s: HTTP %d: %s: %w", op, resp.StatusCode, errorMessage(body), state.ErrForbidden)
	default:
		return WatchResponse{}, fmt.Errorf("%s: HTTP %d: %s", op, resp.StatusCode, errorMessage(body))
	}
	var wr WatchResponse
	if err := json.Unmarshal(body, &wr); err != nil {
		return WatchResponse{}, fmt.Errorf("%s: unreadable answer: %s", op, snippet(body))
	}
	if !wr.Reset && wr.Index < since {
		return WatchResponse{}, fmt.Errorf("%s: the server answered at index %d, before the %d asked from, without a reset; ask another server", op, wr.Index, since)
	}
	return wr, nil
}
