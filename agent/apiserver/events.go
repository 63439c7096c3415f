package apiserver

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// listEvents answers GET /v1/namespaces/{ns}/events[?object=pod/NAME]: the
// events kept in the namespace's pods' statuses, newest last. Events older
// than api.EventTTL are left out; a pod keeps them until its node writes
// its status again.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	if err := api.ValidateName(ns); err != nil {
		writeError(w, http.StatusBadRequest, "namespace: "+err.Error())
		return
	}
	var pod string
	if obj := r.URL.Query().Get("object"); obj != "" {
		kind, name, ok := strings.Cut(obj, "/")
		if !ok || kind != "pod" || api.ValidateDNSLabelLen(name, 63) != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("object %q: name a pod as pod/NAME; only pods have events", api.TruncateText(obj, 140)))
			return
		}
		pod = name
	}
	now := time.Now()
	out := []api.ObjectEvent{}
	found := false
	for _, p := range s.cfg.Store.Pods(state.PodFilter{Namespace: ns}) {
		if pod != "" && p.Name != pod {
			continue
		}
		found = true
		for _, e := range api.RecentEvents(p.Status.Events, now) {
			out = append(out, api.ObjectEvent{Object: "pod/" + p.Name, Node: p.Node, Event: e})
		}
	}
	if pod != "" && !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("pod %s/%s not found", ns, pod))
		return
	}
	slices.SortStableFunc(out, func(a, b api.ObjectEvent) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Object, b.Object))
	})
	writeJSON(w, http.StatusOK, out)
}
