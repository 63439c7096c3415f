package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Output formats of the list commands (-o).
const (
	outputTable = ""
	outputWide  = "wide"
	outputJSON  = "json"
)

func checkOutput(o string) error {
	switch o {
	case outputTable, outputWide, outputJSON:
		return nil
	}
	return fmt.Errorf("-o %q: use json or wide (or leave it out for a table)", o)
}

// table writes aligned columns, as kubectl does: upper-case headers, three
// spaces between columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(headers...)
	return t
}

// maxCell bounds a cell so a row fits a terminal: messages are cut.
const maxCell = 60

func (t *table) row(cells ...string) {
	for i, c := range cells {
		c = printable(c)
		if len([]rune(c)) > maxCell {
			c = string([]rune(c)[:maxCell-1]) + "…"
		}
		if c == "" {
			c = "<none>"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// age is how long ago t was, as kubectl shows it ("45s", "5m30s", "3h",
// "12d"); "<unknown>" for a zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return humanDuration(now.Sub(t))
}

// humanDuration is kubectl's duration.HumanDuration: exact while short,
// coarser as it grows.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int(d / time.Second)
	switch m, h := s/60, s/3600; {
	case s < 120:
		return fmt.Sprintf("%ds", s)
	case m < 10:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s%60)
	case m < 180:
		return fmt.Sprintf("%dm", m)
	case h < 8:
		if m%60 == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m%60)
	case h < 48:
		return fmt.Sprintf("%dh", h)
	case h < 24*8:
		if h%24 == 0 {
			return fmt.Sprintf("%dd", h/24)
		}
		return fmt.Sprintf("%dd%dh", h/24, h%24)
	case h < 24*365*2:
		return fmt.Sprintf("%dd", h/24)
	default:
		return fmt.Sprintf("%dy", h/24/365)
	}
}

// labelList renders labels as k=v,k=v in key order.
func labelList(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// printable replaces control characters with spaces: what a container
// printed reaches tables and descriptions (its last log lines, a probe's
// output in an event) and must not move the cursor or recolour the
// terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}
