package containerlog

import (
	"bytes"
	"time"
)

// Streams a record comes from.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Tags: a full record ends a line; a partial one is continued by the next
// record of the same stream (a line longer than MaxLineBytes, or output
// that ended without a newline).
const (
	tagFull    = 'F'
	tagPartial = 'P'
)

// MaxLineBytes bounds the content of one record: a longer line is split
// into partial records, as containerd's CRI plugin does by default
// (max_container_log_line_size), so neither writer nor reader ever holds
// more than this of one line.
const MaxLineBytes = 16 << 10

// timeFormat is RFC 3339 with nanoseconds at a fixed width, so records of
// one second sort as text too; time.RFC3339Nano parses it.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// appendRecord appends one record of content (without its newline) to b.
func appendRecord(b []byte, ts []byte, stream string, tag byte, content []byte) []byte {
	b = append(b, ts...)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ', tag, ' ')
	b = append(b, content...)
	return append(b, '\n')
}

// record is one parsed line of a log file.
type record struct {
	ts      []byte // as written: RFC 3339
	stream  []byte
	partial bool
	content []byte
}

// parseRecord parses a line without its newline. ok is false for a line
// that is not a record (a torn write after a full disk): readers skip it.
func parseRecord(line []byte) (r record, ok bool) {
	i := bytes.IndexByte(line, ' ')
	if i <= 0 {
		return r, false
	}
	r.ts, line = line[:i], line[i+1:]
	i = bytes.IndexByte(line, ' ')
	if i <= 0 {
		return r, false
	}
	r.stream, line = line[:i], line[i+1:]
	// The tag may carry more, colon-separated (CRI reserves that); only
	// its first letter is read.
	i = bytes.IndexByte(line, ' ')
	if i <= 0 {
		return r, false
	}
	r.partial = line[0] == tagPartial
	r.content = line[i+1:]
	return r, true
}

// time parses the record's timestamp; zero if it does not parse.
func (r record) time() time.Time {
	t, err := time.Parse(time.RFC3339Nano, string(r.ts))
	if err != nil {
		return time.Time{}
	}
	return t
}
