package membership

import (
	"context"
	"log/slog"
	"strings"
)

// logBridge is the io.Writer behind the *log.Logger memberlist writes to. It
// turns each line, "[DEBUG] memberlist: Stream connection from=...", into a
// slog record at the level of its prefix, without the prefix. A line with no
// known prefix is logged at Info.
type logBridge struct {
	l *slog.Logger
}

func newLogBridge(l *slog.Logger) logBridge {
	return logBridge{l: l.With("component", "memberlist")}
}

var logPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
	{"[TRACE]", slog.LevelDebug - 4},
}

// parseLogLine returns the level and message of one memberlist log line.
func parseLogLine(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	level := slog.LevelInfo
	for _, p := range logPrefixes {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			level, line = p.level, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}

func (b logBridge) Write(p []byte) (int, error) {
	// log.Logger calls Write once per message; a message may still hold
	// several lines (it never does in memberlist v0.7, but be safe).
	for line := range strings.Lines(string(p)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		level, msg := parseLogLine(line)
		if b.l.Enabled(context.Background(), level) {
			b.l.Log(context.Background(), level, msg)
		}
	}
	return len(p), nil
}
