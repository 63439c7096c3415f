package store

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu    *sync.Mutex
	min   slog.Level
	attrs []slog.Attr
	recs  *[]rec
}

type rec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newRecorder(min slog.Level) *recorder {
	return &recorder{mu: new(sync.Mutex), min: min, recs: new([]rec)}
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.min }
func (r *recorder) WithGroup(string) slog.Handler                { return r }
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(r.attrs[:len(r.attrs):len(r.attrs)], as...)
	return &c
}
func (r *recorder) Handle(_ context.Context, record slog.Record) error {
	m := map[string]string{}
	for _, a := range r.attrs {
		m[a.Key] = a.Value.String()
	}
	record.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.recs = append(*r.recs, rec{record.Level, record.Message, m})
	return nil
}

func TestHCLogAdapter(t *testing.T) {
	h := newRecorder(slog.LevelDebug)
	l := newHCLogger(slog.New(h), "raft")

	l.Trace("dropped: below the handler's level")
	l.Debug("d")
	l.Info("i", "k", "v")
	l.Named("wal").With("seg", 3).Warn("w")
	l.Error("e", "detail", hclog.Fmt("%d-%s", 7, "x"))
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERROR] from stdlog")

	want := []rec{
		{slog.LevelDebug, "d", map[string]string{"logger": "raft"}},
		{slog.LevelInfo, "i", map[string]string{"logger": "raft", "k": "v"}},
		{slog.LevelWarn, "w", map[string]string{"logger": "raft.wal", "seg": "3"}},
		{slog.LevelError, "e", map[string]string{"logger": "raft", "detail": "7-x"}},
		{slog.LevelError, "from stdlog", map[string]string{"logger": "raft"}},
	}
	got := *h.recs
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].level != want[i].level || got[i].msg != want[i].msg || len(got[i].attrs) != len(want[i].attrs) {
			t.Errorf("record %d = %+v, want %+v", i, got[i], want[i])
			continue
		}
		for k, v := range want[i].attrs {
			if got[i].attrs[k] != v {
				t.Errorf("record %d attr %s = %q, want %q", i, k, got[i].attrs[k], v)
			}
		}
	}

	if l.IsTrace() || !l.IsDebug() || l.GetLevel() != hclog.Debug {
		t.Errorf("IsTrace %v IsDebug %v GetLevel %v with a debug handler", l.IsTrace(), l.IsDebug(), l.GetLevel())
	}
	l.SetLevel(hclog.Warn)
	if l.IsInfo() || !l.IsWarn() || l.Named("x").IsInfo() {
		t.Error("SetLevel(Warn) did not raise the floor for this logger and derived ones")
	}
}
