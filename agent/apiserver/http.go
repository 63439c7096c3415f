package apiserver

import (
	"log/slog"
	"net/http"
	"time"
)

// Timeouts and limits of the API's http.Server (NewHTTPServer).
const (
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout and WriteTimeout bound a whole request and its answer:
	// a write waits at most 30 s for raft (Config.WriteTimeout), and the
	// image route extends both for itself (ImageImportConfig).
	ReadTimeout  = 60 * time.Second
	WriteTimeout = 60 * time.Second
	// IdleTimeout closes keep-alive connections nobody uses.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds request headers (the standard library's
	// default is 1 MiB).
	MaxHeaderBytes = 64 << 10
)

// NewHTTPServer returns the http.Server the agent serves the API with: no
// client can hold a connection or a goroutine open by sending slowly or not
// at all, nor send large headers. Its own errors (TLS handshakes that fail,
// malformed requests) go to log at Warn. The caller sets TLS and calls
// Serve; h is usually a *Server.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// Unwrap lets http.ResponseController reach the connection through the
// status recorder ServeHTTP wraps every response in, so the image route can
// extend its read and write deadlines.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
