package svcproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"strings"
)

// tableState is what one table holds of this package's: its chains with
// their rules, and the rules of other chains that jump into them.
type tableState struct {
	chains map[string][]string // rules as iptables-save prints them, without "-A <chain> "
	jumps  map[string][]foundJump
}

// foundJump is a rule of another chain (a built-in one, normally) that
// enters one of ours.
type foundJump struct {
	index int // among all rules of its chain, from 0
	rule  string
}

// parseSave reads `iptables-save -t <table>` output and keeps what belongs
// to the chains starting with prefix.
func parseSave(out []byte, prefix string) (tableState, error) {
	st := tableState{chains: map[string][]string{}, jumps: map[string][]foundJump{}}
	counts := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if strings.HasPrefix(name, prefix) {
				if _, ok := st.chains[name]; !ok {
					st.chains[name] = nil
				}
			}
		case strings.HasPrefix(line, "-A "):
			name, rest, _ := strings.Cut(line[3:], " ")
			idx := counts[name]
			counts[name]++
			if strings.HasPrefix(name, prefix) {
				st.chains[name] = append(st.chains[name], rest)
				continue
			}
			if !strings.Contains(rest, prefix) {
				continue
			}
			args, err := iptrule.Split(rest)
			if err != nil {
				return st, fmt.Errorf("parse iptables-save line %q: %w", line, err)
			}
			if strings.HasPrefix(iptrule.ArgAfter(args, "-j"), prefix) || strings.HasPrefix(iptrule.ArgAfter(args, "-g"), prefix) {
				st.jumps[name] = append(st.jumps[name], foundJump{index: idx, rule: rest})
			}
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("read iptables-save output: %w", err)
	}
	return st, nil
}
