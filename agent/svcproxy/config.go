package svcproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net/netip"
	"regexp"
	"strings"
)

// Config configures the Service rules of one agent. Several agents may share
// a network namespace (lab nodes on one host): give each its own
// ChainPrefix, and no ChainPrefix+"-SVC" may start another's.
type Config struct {
	// ChainPrefix starts every chain this package makes: <ChainPrefix>-SVC-*,
	// in the nat and filter tables. Cleanup removes every chain so named.
	// At most 10 characters (chain names stop at 28); letters, digits, '_'
	// and '-'. The agent's pod network uses <ChainPrefix>-FWD, -IN and -MASQ,
	// which this package never touches.
	ChainPrefix string
	// CommentTag starts the comment on every dispatch rule and on the jumps
	// from the built-in chains, so `iptables-save | grep <tag>` shows which
	// Service a rule is for. Letters, digits, '_', '.', '-'; at most 32.
	CommentTag string
	// ClusterCIDR is the pod range of the whole cluster. When set, traffic
	// to a ClusterIP from a source outside it (the node's own address,
	// traffic routed in from outside) is masqueraded, as kube-proxy does
	// with --cluster-cidr, so replies come back through this node. Zero:
	// ClusterIP traffic keeps its source.
	ClusterCIDR netip.Prefix
	// NodePodCIDR is this node's pod range. Endpoints in it are local and
	// get a hairpin rule (a pod that reaches its own Service and lands on
	// itself is masqueraded, else it would answer itself directly). Zero
	// treats every endpoint as local, which is right but costs one rule per
	// endpoint IP: set it.
	NodePodCIDR netip.Prefix
	// SNATAddress, when set, is the source given to the connections marked
	// for masquerading instead of the outgoing interface's address: the
	// node's pod bridge address, which every node routes to this node, so
	// that a node port connection sent on to a pod on another node arrives
	// there from inside the cluster's range (pod networks accept new
	// connections from outside that range only if they DNATed them). It
	// must be in NodePodCIDR.
	SNATAddress netip.Addr
	// MasqueradeMark is the packet-mark bit that asks for masquerading in
	// POSTROUTING (NodePort, off-cluster ClusterIP traffic). One bit; the
	// default 0x4000 is kube-proxy's. The CNI portmap plugin uses 0x2000.
	MasqueradeMark uint32
	// RejectMark is the packet-mark bit a Service without endpoints puts on
	// a new connection in nat, for the filter table to REJECT it (see
	// doc.go). One bit, not MasqueradeMark.
	RejectMark uint32
	// Shards is the number of dispatch chains the ClusterIPs are spread
	// over, by their lowest bits: a power of two in 1..256. Adding or
	// removing a Service rewrites one shard (about services/Shards rules).
	Shards int
	// ChainsPerRestore bounds the chains written by one iptables-restore
	// transaction: on the nf_tables backend a transaction's cost grows much
	// faster than the chains it declares (see doc.go).
	ChainsPerRestore int
	// MaxEndpointsPerPort bounds the endpoints of one Service port; the
	// rest (in address order) are left out and counted as skipped.
	MaxEndpointsPerPort int
	// Logger receives what the syncer does; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns a working configuration for a single agent on a
// host. NodePodCIDR and ClusterCIDR are the agent's to fill in.
func DefaultConfig() Config {
	return Config{
		ChainPrefix:         "FLOTILLA",
		CommentTag:          "flotilla",
		MasqueradeMark:      0x4000,
		RejectMark:          0x8000,
		Shards:              64,
		ChainsPerRestore:    500,
		MaxEndpointsPerPort: 1000,
	}
}

const (
	// maxChainName is XT_EXTENSION_MAXNAMELEN less the trailing NUL.
	maxChainName = 28
	// chainInfix follows ChainPrefix in every chain name; a hashed chain
	// adds hashLen characters.
	chainInfix = "-SVC-"
	// hashLen characters of base32 are 65 bits: no collision in practice
	// among even a million Service ports.
	hashLen = 13
	// maxChainPrefix keeps <prefix>-SVC-<hash> within maxChainName.
	maxChainPrefix = maxChainName - len(chainInfix) - hashLen
	maxCommentTag  = 32
	maxShards      = 256
	// affinitySeconds is how long a client stays with its endpoint after
	// its last new connection (kube-proxy's default timeoutSeconds).
	affinitySeconds = 10800
)

var (
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_\-]*$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)
)

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.ChainPrefix == "":
		errs = append(errs, errors.New("chain prefix is empty; set it, e.g. \"FLOTILLA\""))
	case len(c.ChainPrefix) > maxChainPrefix:
		errs = append(errs, fmt.Errorf("chain prefix %q is %d characters; at most %d fit, as chains are named <prefix>%s<%d-character hash> and iptables allows %d", c.ChainPrefix, len(c.ChainPrefix), maxChainPrefix, chainInfix, hashLen, maxChainName))
	case !prefixRE.MatchString(c.ChainPrefix):
		errs = append(errs, fmt.Errorf("chain prefix %q has characters other than letters, digits, '_', '-'", c.ChainPrefix))
	case strings.HasPrefix(c.ChainPrefix, "CNI-") || strings.HasPrefix(c.ChainPrefix, "KUBE-"):
		errs = append(errs, fmt.Errorf("chain prefix %q starts like the CNI plugins' or kube-proxy's chains; pick another", c.ChainPrefix))
	}
	switch {
	case c.CommentTag == "":
		errs = append(errs, errors.New("comment tag is empty; set it, e.g. \"flotilla\""))
	case len(c.CommentTag) > maxCommentTag || !tagRE.MatchString(c.CommentTag):
		errs = append(errs, fmt.Errorf("comment tag %q: want at most %d letters, digits, '_', '.', '-'", c.CommentTag, maxCommentTag))
	}
	for _, p := range []struct {
		name string
		pfx  netip.Prefix
	}{{"cluster CIDR", c.ClusterCIDR}, {"node pod CIDR", c.NodePodCIDR}} {
		switch {
		case !p.pfx.IsValid():
			// Unset: allowed.
		case !p.pfx.Addr().Is4():
			errs = append(errs, fmt.Errorf("%s %s is not IPv4; Services are IPv4 only", p.name, p.pfx))
		case p.pfx.Masked() != p.pfx:
			errs = append(errs, fmt.Errorf("%s %s has host bits set; did you mean %s?", p.name, p.pfx, p.pfx.Masked()))
		}
	}
	if c.SNATAddress.IsValid() && (!c.NodePodCIDR.IsValid() || !c.NodePodCIDR.Contains(c.SNATAddress)) {
		errs = append(errs, fmt.Errorf("SNAT address %s is not inside node pod CIDR %v", c.SNATAddress, c.NodePodCIDR))
	}
	if c.ClusterCIDR.IsValid() && c.NodePodCIDR.IsValid() && c.ClusterCIDR.Addr().Is4() && c.NodePodCIDR.Addr().Is4() &&
		(c.ClusterCIDR.Bits() > c.NodePodCIDR.Bits() || !c.ClusterCIDR.Contains(c.NodePodCIDR.Addr())) {
		errs = append(errs, fmt.Errorf("node pod CIDR %s is not inside cluster CIDR %s", c.NodePodCIDR, c.ClusterCIDR))
	}
	for _, m := range []struct {
		name string
		v    uint32
	}{{"masquerade mark", c.MasqueradeMark}, {"reject mark", c.RejectMark}} {
		if bits.OnesCount32(m.v) != 1 {
			errs = append(errs, fmt.Errorf("%s %#x is not a single bit; use e.g. 0x4000", m.name, m.v))
		}
	}
	if c.MasqueradeMark == c.RejectMark && c.MasqueradeMark != 0 {
		errs = append(errs, fmt.Errorf("masquerade mark and reject mark are both %#x; they must differ", c.RejectMark))
	}
	if c.Shards < 1 || c.Shards > maxShards || bits.OnesCount(uint(c.Shards)) != 1 {
		errs = append(errs, fmt.Errorf("shards %d: want a power of two in 1..%d (default 64)", c.Shards, maxShards))
	}
	if c.ChainsPerRestore < 1 {
		errs = append(errs, fmt.Errorf("chains per restore %d: want at least 1 (default 500)", c.ChainsPerRestore))
	}
	if c.MaxEndpointsPerPort < 1 {
		errs = append(errs, fmt.Errorf("max endpoints per port %d: want at least 1 (default 1000)", c.MaxEndpointsPerPort))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid service proxy config: %w", err)
	}
	return nil
}

// chainPrefix starts every chain of this package: Cleanup and the restart
// scan own exactly the chains so named.
func (c Config) chainPrefix() string { return c.ChainPrefix + chainInfix }

// Fixed chains. None of their suffixes is hashLen long, so they never
// collide with a hashed Service chain.
func (c Config) servicesChain() string  { return c.chainPrefix() + "SERVICES" }
func (c Config) nodePortsChain() string { return c.chainPrefix() + "NODEPORTS" }
func (c Config) postChain() string      { return c.chainPrefix() + "POST" }
func (c Config) hairpinChain() string   { return c.chainPrefix() + "HAIRPIN" }
func (c Config) rejectChain() string    { return c.chainPrefix() + "REJECT" }

// shardChain is the dispatch chain of the ClusterIPs whose low bits are i.
func (c Config) shardChain(i int) string { return fmt.Sprintf("%sD%02X", c.chainPrefix(), i) }
