package apiserver

import (
	"context"
	"fmt"
	"net/http"

	"github.com/flotilla-io/flotilla/api"
)

func decodeService(w http.ResponseWriter, r *http.Request) (api.Service, bool) {
	var s api.Service
	if !decodeNamed(w, r, "service", &s, &s.Namespace, &s.Name, s.Validate) {
		return s, false
	}
	s.CreateIndex, s.ModifyIndex = 0, 0
	return s, true
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, nonNil(s.cfg.Store.ListServices(r.PathValue("ns"))))
}

func (s *Server) getService(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	svc, ok := s.cfg.Store.Service(ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s/%s not found", ns, name))
		return
	}
	writeJSON(w, http.StatusOK, svc)
}

func (s *Server) getEndpoints(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	e, ok := s.cfg.Store.ServiceEndpoints(ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s/%s not found", ns, name))
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) createService(w http.ResponseWriter, r *http.Request) {
	svc, ok := decodeService(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.CreateService(ctx, svc)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("service created", "service", out.ID(), "cluster_ip", out.ClusterIP, "type", out.Type)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) updateService(w http.ResponseWriter, r *http.Request) {
	svc, ok := decodeService(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.UpdateService(ctx, svc)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("service updated", "service", out.ID())
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteService(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	if err := s.cfg.Store.DeleteService(ctx, ns, name); err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("service deleted", "service", ns+"/"+name)
	w.WriteHeader(http.StatusNoContent)
}
