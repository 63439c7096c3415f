package store

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends the logs of raft, which speaks hclog, to
// the agent's slog.Logger at the matching level. hclog's Trace maps to
// slog.LevelDebug-4, below Debug.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	implied []any
	// level is a floor set with SetLevel, shared by derived loggers as in
	// hclog; NoLevel leaves filtering to the slog handler.
	level *atomic.Int32
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// newHCLogger returns an hclog.Logger that writes to l.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l, name: name, level: new(atomic.Int32)}
}

const levelTrace = slog.LevelDebug - 4

func toSlogLevel(lv hclog.Level) slog.Level {
	switch lv {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *hclogAdapter) enabled(lv hclog.Level) bool {
	if lv == hclog.Off {
		return false
	}
	if floor := hclog.Level(a.level.Load()); floor != hclog.NoLevel && lv < floor {
		return false
	}
	return a.l.Enabled(context.Background(), toSlogLevel(lv))
}

// args converts hclog key/value pairs for slog: hclog.Format values are
// rendered, and the logger's name is added.
func (a *hclogAdapter) args(kv []any) []any {
	out := make([]any, 0, len(kv)+2)
	if a.name != "" {
		out = append(out, "logger", a.name)
	}
	for _, v := range kv {
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				v = fmt.Sprintf(format, f[1:]...)
			}
		}
		out = append(out, v)
	}
	return out
}

func (a *hclogAdapter) Log(lv hclog.Level, msg string, args ...any) {
	if !a.enabled(lv) {
		return
	}
	a.l.Log(context.Background(), toSlogLevel(lv), msg, a.args(args)...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.l = a.l.With(args...)
	c.implied = append(a.implied[:len(a.implied):len(a.implied)], args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) SetLevel(lv hclog.Level) { a.level.Store(int32(lv)) }

func (a *hclogAdapter) GetLevel() hclog.Level {
	if lv := hclog.Level(a.level.Load()); lv != hclog.NoLevel {
		return lv
	}
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.l.Enabled(context.Background(), toSlogLevel(lv)) {
			return lv
		}
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdlogWriter{a: a, opts: *opts}
}

// stdlogWriter turns lines of a standard *log.Logger into records, reading
// the level from a "[WARN]"-style prefix when asked to.
type stdlogWriter struct {
	a    *hclogAdapter
	opts hclog.StandardLoggerOptions
}

var stdlogPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
}

func (w *stdlogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lv := hclog.Info
	for _, pl := range stdlogPrefixes {
		if rest, ok := strings.CutPrefix(line, pl.prefix); ok {
			line = strings.TrimSpace(rest)
			if w.opts.InferLevels {
				lv = pl.level
			}
			break
		}
	}
	if w.opts.ForceLevel != hclog.NoLevel {
		lv = w.opts.ForceLevel
	}
	w.a.Log(lv, line)
	return len(p), nil
}
