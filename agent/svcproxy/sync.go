package svcproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Syncer keeps this package's chains equal to the last State given to
// Sync, writing only what changed. Its methods may be called concurrently;
// they run one at a time.
type Syncer struct {
	cfg Config
	app Applier
	log *slog.Logger

	mu sync.Mutex
	r  *renderer
	// applied is what the tables hold of ours, as far as this Syncer
	// knows; nil until read from iptables-save (first Sync, after a failed
	// one, after Forget or Cleanup).
	applied map[string]*tableState
	// lastSkipped is the last Sync's skipped entries, one a line.
	lastSkipped string
}

// NewSyncer returns a Syncer that loads rules through app. It reads nothing
// until the first Sync, which adopts the chains a previous run left.
func NewSyncer(cfg Config, app Applier) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if app == nil {
		return nil, errors.New("service proxy: no Applier; use NewExecApplier(DefaultExecConfig())")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Syncer{cfg: cfg, app: app, log: log, r: newRenderer(cfg)}, nil
}

// SyncStats says what a Sync did.
type SyncStats struct {
	// ServicePorts is the number of Service ports programmed.
	ServicePorts int
	// Skipped counts the entries of the State left out as invalid; each is
	// logged at warning level when the skipped entries change.
	Skipped int
	// ChainsWritten counts chains created or replaced, ChainsDeleted those
	// removed, JumpsFixed the built-in chains whose jump into ours was
	// added or moved back to the top.
	ChainsWritten, ChainsDeleted, JumpsFixed int
	// Restores is the number of iptables-restore transactions run.
	Restores int
	Duration time.Duration
}

// Sync makes the tables hold the rules of st. The first Sync of a Syncer
// reads the chains already there (a restarted agent's) and rewrites only
// those that differ, each replaced whole inside one iptables-restore
// transaction, so traffic to an unchanged Service never sees a gap. Later
// Syncs compare with what the previous one wrote: an endpoint change
// rewrites one chain in one transaction. Invalid entries of st are skipped
// (SyncStats.Skipped) and the rest is programmed; the error reports a
// failed restore only, after which the next Sync reads the tables again.
func (s *Syncer) Sync(ctx context.Context, st State) (SyncStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	rs := s.r.render(st)
	stats := SyncStats{Skipped: len(rs.Skipped)}
	for _, c := range rs.nat.chains {
		if c.kind == kindService {
			stats.ServicePorts++
		}
	}
	s.logSkipped(rs.Skipped)

	if s.applied == nil {
		applied, err := s.read(ctx)
		if err != nil {
			return stats, err
		}
		s.applied = applied
	}
	txns := plan(s.cfg, rs, s.applied)
	for _, t := range txns {
		if err := ctx.Err(); err != nil {
			s.applied = nil
			return stats, fmt.Errorf("sync service rules: %w", err)
		}
		if err := s.app.Restore(ctx, t.input); err != nil {
			// Whatever part committed is found by the next Sync's read.
			s.applied = nil
			stats.Duration = time.Since(start)
			return stats, fmt.Errorf("sync service rules: %w", err)
		}
		stats.Restores++
		stats.ChainsWritten += t.written
		stats.ChainsDeleted += t.deleted
		stats.JumpsFixed += t.jumps
	}
	for _, t := range txns {
		t.record(s.applied)
	}
	for _, tb := range []*table{&rs.filter, &rs.nat} {
		have := s.applied[tb.name]
		have.jumps = map[string][]foundJump{}
		for _, j := range tb.jumps {
			have.jumps[j.parent] = []foundJump{{index: 0, rule: j.rule}}
		}
	}
	stats.Duration = time.Since(start)
	if stats.Restores > 0 {
		s.log.Info("service rules synced", "service_ports", stats.ServicePorts, "chains_written", stats.ChainsWritten,
			"chains_deleted", stats.ChainsDeleted, "jumps_fixed", stats.JumpsFixed, "restores", stats.Restores,
			"skipped", stats.Skipped, "duration", stats.Duration)
	} else {
		s.log.Debug("service rules unchanged", "service_ports", stats.ServicePorts, "skipped", stats.Skipped, "duration", stats.Duration)
	}
	return stats, nil
}

// maxLoggedSkips bounds the warnings one Sync logs for skipped entries.
const maxLoggedSkips = 20

// logSkipped warns about skipped entries when they differ from the last
// Sync's, so a State that keeps an invalid Service does not repeat the
// warnings on every Sync.
func (s *Syncer) logSkipped(skipped []error) {
	var b strings.Builder
	for _, err := range skipped {
		b.WriteString(err.Error())
		b.WriteByte('\n')
	}
	if b.String() == s.lastSkipped {
		return
	}
	s.lastSkipped = b.String()
	for i, err := range skipped {
		if i == maxLoggedSkips {
			s.log.Warn("more service entries skipped", "count", len(skipped)-i)
			break
		}
		s.log.Warn("service entry skipped", "err", err)
	}
}

// Forget makes the next Sync read the tables instead of trusting what this
// Syncer wrote, so chains changed behind its back (an administrator's
// iptables -F) are repaired. The agent may call it now and then.
func (s *Syncer) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = nil
}

// Cleanup removes every chain whose name starts with <ChainPrefix>-SVC-
// from the nat and filter tables, and every rule of other chains that
// jumps into one (for `flotilla-agent cleanup`). Found through
// iptables-save, so it needs no memory of earlier runs. Other rules and
// chains, the pod network's <ChainPrefix>-FWD among them, stay.
func (s *Syncer) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = nil
	applied, err := s.read(ctx)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	for _, name := range []string{filterTable, natTable} {
		st := applied[name]
		if len(st.chains) == 0 && len(st.jumps) == 0 {
			continue
		}
		chains := sortedKeys(st.chains)
		b.WriteString("*" + name + "\n")
		for _, c := range chains {
			writeDecl(&b, c) // flushes it
		}
		for _, parent := range sortedKeys(st.jumps) {
			for _, j := range st.jumps[parent] {
				b.WriteString("-D " + parent + " " + j.rule + "\n")
			}
		}
		for _, c := range chains {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	if b.Len() == 0 {
		return nil
	}
	if err := s.app.Restore(ctx, b.Bytes()); err != nil {
		return fmt.Errorf("clean up service rules: %w", err)
	}
	s.log.Info("service rules removed", "prefix", s.cfg.chainPrefix())
	return nil
}

// read returns what the filter and nat tables hold of ours.
func (s *Syncer) read(ctx context.Context) (map[string]*tableState, error) {
	out := map[string]*tableState{}
	for _, name := range []string{filterTable, natTable} {
		save, err := s.app.Save(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read %s table: %w", name, err)
		}
		st, err := parseSave(save, s.cfg.chainPrefix())
		if err != nil {
			return nil, fmt.Errorf("read %s table: %w", name, err)
		}
		out[name] = &st
	}
	return out, nil
}

// txn is one iptables-restore input.
type txn struct {
	input                   []byte
	written, deleted, jumps int
	writes                  []tableChain // chains it writes
	deletes                 []tableChain // chains it deletes (rules unused)
}

type tableChain struct {
	table string
	c     *chain
}

// record updates applied with what t did once it committed.
func (t *txn) record(applied map[string]*tableState) {
	for _, w := range t.writes {
		applied[w.table].chains[w.c.name] = w.c.rules
	}
	for _, d := range t.deletes {
		delete(applied[d.table].chains, d.c.name)
	}
}

// plan returns the transactions that turn applied into rs, in order:
//
//  1. Service and shard chains that changed, shard by shard, at most
//     cfg.ChainsPerRestore chains a transaction; a shard is written after
//     (or with) the Service chains it jumps to, which are new or refilled.
//     An endpoint change is one transaction holding one chain.
//  2. One transaction for the rest: the filter table's chain and jumps, the
//     nat table's fixed chains (the top-level dispatch, node ports,
//     masquerade, hairpin) and jumps, and the deletion of chains no longer
//     wanted, which by then nothing jumps to any more.
//
// Each chain is replaced whole within one transaction (declared, which
// flushes it, and refilled), so a packet sees either the old rules or the
// new ones.
func plan(cfg Config, rs *Ruleset, applied map[string]*tableState) []txn {
	var (
		txns  []txn
		cur   txn
		decls bytes.Buffer
		rules bytes.Buffer
	)
	flush := func() {
		if cur.written == 0 {
			return
		}
		var b bytes.Buffer
		b.Grow(decls.Len() + rules.Len() + 16)
		b.WriteString("*nat\n")
		b.Write(decls.Bytes())
		b.Write(rules.Bytes())
		b.WriteString("COMMIT\n")
		cur.input = b.Bytes()
		txns = append(txns, cur)
		cur = txn{}
		decls.Reset()
		rules.Reset()
	}
	nat := applied[natTable]
	for i := range rs.nat.chains {
		c := &rs.nat.chains[i]
		if c.kind == kindFixed || !changed(nat, c) {
			continue
		}
		if c.kind == kindService && cur.written >= cfg.ChainsPerRestore {
			flush()
		}
		writeDecl(&decls, c.name)
		writeRules(&rules, c)
		cur.written++
		cur.writes = append(cur.writes, tableChain{natTable, c})
	}
	flush()

	var final txn
	var b bytes.Buffer
	for _, t := range []*table{&rs.filter, &rs.nat} {
		if section, sec := finalSection(t, applied[t.name]); section != nil {
			b.Write(section)
			final.written += sec.written
			final.deleted += sec.deleted
			final.jumps += sec.jumps
			final.writes = append(final.writes, sec.writes...)
			final.deletes = append(final.deletes, sec.deletes...)
		}
	}
	if b.Len() > 0 {
		final.input = b.Bytes()
		txns = append(txns, final)
	}
	return txns
}

// finalSection is the part of the last transaction for table t: its fixed
// chains that changed, its jumps that are missing or not first, and the
// deletion of the chains of ours it no longer wants. nil when there is
// nothing to do.
func finalSection(t *table, have *tableState) (section []byte, sec txn) {
	var decls, rules, fixes, dels bytes.Buffer
	present := 0
	for i := range t.chains {
		c := &t.chains[i]
		if _, ok := have.chains[c.name]; ok {
			present++
		}
		if c.kind != kindFixed || !changed(have, c) {
			continue
		}
		writeDecl(&decls, c.name)
		writeRules(&rules, c)
		sec.written++
		sec.writes = append(sec.writes, tableChain{t.name, c})
	}
	if present < len(have.chains) {
		// Some chains of ours are no longer wanted.
		wanted := make(map[string]bool, len(t.chains))
		for _, c := range t.chains {
			wanted[c.name] = true
		}
		var gone []string
		for name := range have.chains {
			if !wanted[name] {
				gone = append(gone, name)
			}
		}
		slices.Sort(gone)
		for _, name := range gone {
			writeDecl(&decls, name) // flush, so it can go
			dels.WriteString("-X " + name + "\n")
			sec.deleted++
			sec.deletes = append(sec.deletes, tableChain{t.name, &chain{name: name}})
		}
	}
	want := map[string]string{}
	for _, j := range t.jumps {
		want[j.parent] = j.rule
	}
	parents := sortedKeys(have.jumps)
	for p := range want {
		if !slices.Contains(parents, p) {
			parents = append(parents, p)
		}
	}
	slices.Sort(parents)
	for _, p := range parents {
		found := have.jumps[p]
		rule, ok := want[p]
		if ok && len(found) == 1 && found[0].index == 0 && found[0].rule == rule {
			continue
		}
		// Delete and insert in one transaction: the jump moves to the top
		// (ahead of, say, the pod network's ACCEPT of bridge traffic in
		// FORWARD) without a moment in which it is missing.
		for _, f := range found {
			fixes.WriteString("-D " + p + " " + f.rule + "\n")
		}
		if ok {
			fixes.WriteString("-I " + p + " 1 " + rule + "\n")
		}
		sec.jumps++
	}
	if decls.Len()+fixes.Len()+dels.Len() == 0 {
		return nil, sec
	}
	var b bytes.Buffer
	b.WriteString("*" + t.name + "\n")
	b.Write(decls.Bytes())
	b.Write(rules.Bytes())
	b.Write(fixes.Bytes())
	b.Write(dels.Bytes())
	b.WriteString("COMMIT\n")
	return b.Bytes(), sec
}

// changed reports whether c is missing from have or holds other rules.
// Rules found equal but read from iptables-save are replaced in have by
// c's, which the renderer keeps between Syncs, so that later Syncs compare
// them by identity instead of byte by byte (10,000 chains: ~10 ms).
func changed(have *tableState, c *chain) bool {
	rules, ok := have.chains[c.name]
	switch {
	case !ok || len(rules) != len(c.rules):
		return true
	case len(rules) == 0 || &rules[0] == &c.rules[0]:
		return false
	case !slices.Equal(rules, c.rules):
		return true
	}
	have.chains[c.name] = c.rules
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
