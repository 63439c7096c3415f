package svcproxy

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rules are rendered exactly as iptables-save prints them back (checked on
// the nf_tables backend of iptables 1.8.9: MARK --or-mark prints as
// --set-xmark V/V, probabilities as the 31-bit fraction with 11 decimals,
// comments quoted only when they hold a space), so a restarted agent can
// compare the kernel's chains with the wanted ones text for text and leave
// every unchanged chain alone.

const (
	filterTable = "filter"
	natTable    = "nat"
)

type chainKind int

const (
	kindFixed   chainKind = iota
	kindShard             // a dispatch chain: one rule per Service port of the shard
	kindService           // one Service port's endpoint DNAT rules
)

type chain struct {
	name  string
	kind  chainKind
	shard int // for kindShard and kindService
	rules []string
}

// jump is a rule of a built-in chain that enters one of ours; it is kept
// first in parent.
type jump struct {
	parent string
	rule   string
}

type table struct {
	name   string
	chains []chain // fixed chains first, then per shard: its Service chains, then the shard
	jumps  []jump
}

// Ruleset is the rendered form of a State: every chain of this package in
// the filter and nat tables and the jumps into them.
type Ruleset struct {
	filter, nat table
	// Skipped holds one error for every entry of the State left out
	// (non-IPv4 address, port 0, duplicate, ...).
	Skipped []error
}

// Render turns st into rules. It is pure: the same Config and State always
// give the same Ruleset, and nothing is read from or done to the system.
func Render(cfg Config, st State) (*Ruleset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newRenderer(cfg).render(st), nil
}

// Bytes returns the Ruleset as one iptables-restore --noflush input that
// creates it all in tables holding none of it. The Syncer splits the same
// chains over several transactions and writes only those that changed.
func (r *Ruleset) Bytes() []byte {
	var b bytes.Buffer
	for _, t := range []*table{&r.filter, &r.nat} {
		b.WriteString("*" + t.name + "\n")
		for _, c := range t.chains {
			writeDecl(&b, c.name)
		}
		for i := range t.chains {
			writeRules(&b, &t.chains[i])
		}
		for _, j := range t.jumps {
			b.WriteString("-I " + j.parent + " 1 " + j.rule + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

func writeDecl(b *bytes.Buffer, chain string) { b.WriteString(":" + chain + " - [0:0]\n") }

func writeRules(b *bytes.Buffer, c *chain) {
	for _, r := range c.rules {
		b.WriteString("-A ")
		b.WriteString(c.name)
		b.WriteByte(' ')
		b.WriteString(r)
		b.WriteByte('\n')
	}
}

// renderer renders States. It keeps every Service it rendered with what
// was rendered from it (see normalize), so a Sync at 10,000 Services formats
// only the chains whose Service or endpoints changed. Render uses a fresh
// one: the same code, without history.
type renderer struct {
	cfg  Config
	gen  uint64
	svcs map[[2]string]*svcEntry
}

func newRenderer(cfg Config) *renderer {
	return &renderer{cfg: cfg, svcs: map[[2]string]*svcEntry{}}
}

func (r *renderer) render(st State) *Ruleset {
	cfg := r.cfg
	sps, skipped := r.normalize(st)
	rs := &Ruleset{Skipped: skipped}

	rs.filter = table{
		name: filterTable,
		// TCP gets a reset first: the kernel rate-limits the ICMP errors
		// it sends (net.ipv4.icmp_ratelimit), so after a few quick
		// attempts a client of a service without endpoints would wait for
		// its SYN to time out instead of failing at once. UDP can only be
		// told by ICMP.
		chains: []chain{{name: cfg.rejectChain(), rules: []string{
			"-p tcp -j REJECT --reject-with tcp-reset",
			"-j REJECT --reject-with icmp-port-unreachable",
		}}},
	}
	rejectJump := "-m mark --mark " + markMask(cfg.RejectMark) + " -m comment --comment " + quote(cfg.CommentTag+" service rejects") + " -j " + cfg.rejectChain()
	for _, parent := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		rs.filter.jumps = append(rs.filter.jumps, jump{parent, rejectJump})
	}

	var (
		services  []string
		nodePorts []*svcPort
		local     []netip.Addr
		used      = map[netip.Addr]bool{}
		chains    = make([]chain, 4, 4+len(sps)+cfg.Shards)
	)
	for i := 0; i < len(sps); {
		// sps is sorted by shard: one dispatch chain per run of a shard.
		shard := chain{name: cfg.shardChain(sps[i].shard), kind: kindShard, shard: sps[i].shard}
		if cfg.Shards == 1 {
			services = append(services, "-j "+shard.name)
		} else {
			services = append(services, fmt.Sprintf("-d 0.0.0.%d/0.0.0.%d -j %s", shard.shard, cfg.Shards-1, shard.name))
		}
		for ; i < len(sps) && sps[i].shard == shard.shard; i++ {
			sp := sps[i]
			shard.rules = append(shard.rules, sp.dispatch)
			chains = append(chains, chain{name: sp.chain, kind: kindService, shard: sp.shard, rules: sp.rules})
			if sp.nodePort != 0 {
				nodePorts = append(nodePorts, sp)
			}
			for _, ip := range sp.local {
				if !used[ip] {
					used[ip] = true
					local = append(local, ip)
				}
			}
		}
		chains = append(chains, shard)
	}
	services = append(services, "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j "+cfg.nodePortsChain())

	slices.SortFunc(nodePorts, func(a, b *svcPort) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.nodePort, b.nodePort))
	})
	nodePortChain := make([]string, 0, 2*len(nodePorts))
	for _, sp := range nodePorts {
		nodePortChain = append(nodePortChain, sp.nodePortRules[:]...)
	}

	slices.SortFunc(local, netip.Addr.Compare)
	hairpin := make([]string, len(local))
	for i, ip := range local {
		hairpin[i] = "-s " + ip.String() + "/32 -d " + ip.String() + "/32 -j MASQUERADE --random-fully"
	}

	masq := "-j MASQUERADE --random-fully"
	if cfg.SNATAddress.IsValid() {
		masq = "-j SNAT --to-source " + cfg.SNATAddress.String() + " --random-fully"
	}
	chains[0] = chain{name: cfg.servicesChain(), rules: services}
	chains[1] = chain{name: cfg.nodePortsChain(), rules: nodePortChain}
	chains[2] = chain{name: cfg.postChain(), rules: []string{
		// Hairpin: a pod sent to itself by a Service would answer itself
		// directly; only DNATed connections can be that.
		"-m conntrack --ctstate DNAT -j " + cfg.hairpinChain(),
		"-m mark ! --mark " + markMask(cfg.MasqueradeMark) + " -j RETURN",
		// Clear the bit, so a packet that goes through the stack again is
		// not masqueraded twice (as kube-proxy does).
		"-j MARK --set-xmark 0x0/" + fmt.Sprintf("%#x", cfg.MasqueradeMark),
		masq,
	}}
	chains[3] = chain{name: cfg.hairpinChain(), rules: hairpin}
	rs.nat = table{
		name:   natTable,
		chains: chains,
		jumps: []jump{
			{"PREROUTING", "-m comment --comment " + quote(cfg.CommentTag+" services") + " -j " + cfg.servicesChain()},
			{"OUTPUT", "-m comment --comment " + quote(cfg.CommentTag+" services") + " -j " + cfg.servicesChain()},
			{"POSTROUTING", "-m comment --comment " + quote(cfg.CommentTag+" service masquerade") + " -j " + cfg.postChain()},
		},
	}
	return rs
}

// serviceRules are the rules of one Service port's chain: one DNAT rule
// per endpoint, the i-th of n taken with probability 1/(n-i) so each is
// picked with probability 1/n, the last unconditionally. With client_ip
// affinity each endpoint also has a recent list named after it: a client
// found in one (--update: seen in the last 3 hours, which also refreshes
// the time) goes back to that endpoint; a new pick adds the client to the
// list of the endpoint picked (--set). That is kube-proxy's scheme, with the
// --set moved from a per-endpoint chain into the DNAT rule itself (the
// statistic match is tested first, so only the endpoint picked records the
// client), which saves a chain per endpoint. Without endpoints, new
// connections are marked for the filter table to refuse.
func (r *renderer) serviceRules(sp *svcPort) []string {
	cfg := r.cfg
	var rules []string
	if len(sp.eps) == 0 {
		rules = []string{"-m comment --comment " + quote(cfg.CommentTag+" "+sp.key.String()+" has no endpoints") + " -j MARK --set-xmark " + markMask(cfg.RejectMark)}
	} else {
		rules = make([]string, 0, 1+2*len(sp.eps))
		if cfg.ClusterCIDR.IsValid() {
			rules = append(rules, "! -s "+cfg.ClusterCIDR.String()+" -j MARK --set-xmark "+markMask(cfg.MasqueradeMark))
		}
		var recent []string
		if sp.affinity {
			recent = make([]string, len(sp.eps))
			for i, e := range sp.eps {
				recent[i] = cfg.ChainPrefix + "-AFF-" + hash(sp.key.String()+"/"+sp.proto+"/"+e.String())
				rules = append(rules, "-p "+sp.proto+" -m recent --update --seconds "+strconv.Itoa(affinitySeconds)+
					" --reap --name "+recent[i]+" --mask 255.255.255.255 --rsource -j DNAT --to-destination "+e.String())
			}
		}
		for i, e := range sp.eps {
			var b strings.Builder
			b.WriteString("-p " + sp.proto)
			if n := len(sp.eps) - i; n > 1 {
				b.WriteString(" -m statistic --mode random --probability " + probability(n))
			}
			if sp.affinity {
				b.WriteString(" -m recent --set --name " + recent[i] + " --mask 255.255.255.255 --rsource")
			}
			b.WriteString(" -j DNAT --to-destination " + e.String())
			rules = append(rules, b.String())
		}
	}
	return rules
}

// probability renders 1/n as iptables-save prints it back: the statistic
// match keeps lround(2^31 * p) and prints that over 2^31 with 11 decimals.
func probability(n int) string {
	return strconv.FormatFloat(math.Round(float64(0x80000000)/float64(n))/0x80000000, 'f', 11, 64)
}

func markMask(bit uint32) string { return fmt.Sprintf("%#x/%#x", bit, bit) }

// quote quotes a comment as iptables-save does: only when it holds a space.
// Comments are made of validated names, so they hold no quote or backslash.
func quote(s string) string {
	if strings.ContainsRune(s, ' ') {
		return `"` + s + `"`
	}
	return s
}
