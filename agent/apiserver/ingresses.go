package apiserver

import (
	"context"
	"fmt"
	"net/http"

	"github.com/flotilla-io/flotilla/api"
)

// Ingresses. Writes carry TLS keys; every answer is redacted (KeySHA256
// stands for each key) and no log line names more than the ingress.

func decodeIngress(w http.ResponseWriter, r *http.Request) (api.Ingress, bool) {
	var in api.Ingress
	if !decodeNamed(w, r, "ingress", &in, &in.Namespace, &in.Name, in.Validate) {
		return in, false
	}
	// Server-owned fields are never taken from a client.
	in.CreateIndex, in.ModifyIndex = 0, 0
	for i := range in.TLS {
		in.TLS[i].KeySHA256 = ""
	}
	return in, true
}

func redactedAll(l []api.Ingress) []api.Ingress {
	out := make([]api.Ingress, len(l))
	for i := range l {
		out[i] = *l[i].Redacted()
	}
	return out
}

func (s *Server) listIngresses(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, redactedAll(s.cfg.Store.ListIngresses(r.PathValue("ns"))))
}

func (s *Server) getIngress(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	in, ok := s.cfg.Store.Ingress(ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("ingress %s/%s not found", ns, name))
		return
	}
	writeJSON(w, http.StatusOK, in.Redacted())
}

func (s *Server) createIngress(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeIngress(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.CreateIngress(ctx, in)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("ingress created", "ingress", out.ID(), "rules", len(out.Rules), "tls", len(out.TLS))
	writeJSON(w, http.StatusCreated, out.Redacted())
}

func (s *Server) updateIngress(w http.ResponseWriter, r *http.Request) {
	in, ok := decodeIngress(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.UpdateIngress(ctx, in)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("ingress updated", "ingress", out.ID(), "rules", len(out.Rules), "tls", len(out.TLS))
	writeJSON(w, http.StatusOK, out.Redacted())
}

func (s *Server) deleteIngress(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	if err := s.cfg.Store.DeleteIngress(ctx, ns, name); err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("ingress deleted", "ingress", ns+"/"+name)
	w.WriteHeader(http.StatusNoContent)
}
