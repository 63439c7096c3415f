package containerlog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// fileName is the file seq of run: no file is ever renamed, so a reader
// that holds one open, or knows its name, is never fooled by a rotation.
func fileName(run, seq int) string { return fmt.Sprintf("%d.%d.log", run, seq) }

// parseName returns the run and sequence of a log file's name.
func parseName(name string) (run, seq int, ok bool) {
	base, found := strings.CutSuffix(name, ".log")
	if !found {
		return 0, 0, false
	}
	r, s, found := strings.Cut(base, ".")
	if !found {
		return 0, 0, false
	}
	run, err1 := strconv.Atoi(r)
	seq, err2 := strconv.Atoi(s)
	if err1 != nil || err2 != nil || run < 1 || seq < 1 {
		return 0, 0, false
	}
	return run, seq, true
}

// layout is what a log directory holds: its runs, oldest first, and the
// files of each, oldest first.
type layout struct {
	runs  []int
	files map[int][]int // run → sequences
}

// readLayout lists dir. A missing directory is an error satisfying
// os.IsNotExist.
func readLayout(dir string) (layout, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return layout{}, err
	}
	l := layout{files: map[int][]int{}}
	for _, e := range ents {
		run, seq, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if _, seen := l.files[run]; !seen {
			l.runs = append(l.runs, run)
		}
		l.files[run] = append(l.files[run], seq)
	}
	slices.Sort(l.runs)
	for _, seqs := range l.files {
		slices.Sort(seqs)
	}
	return l, nil
}

// last returns the newest run, 0 if there is none.
func (l layout) last() int {
	if len(l.runs) == 0 {
		return 0
	}
	return l.runs[len(l.runs)-1]
}

// after returns the first run newer than run, 0 if there is none.
func (l layout) after(run int) int {
	for _, r := range l.runs {
		if r > run {
			return r
		}
	}
	return 0
}

// nextFile returns the first file of run after seq, 0 if there is none.
func (l layout) nextFile(run, seq int) int {
	for _, s := range l.files[run] {
		if s > seq {
			return s
		}
	}
	return 0
}

func path(dir string, run, seq int) string { return filepath.Join(dir, fileName(run, seq)) }
