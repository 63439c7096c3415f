// Package svcproxy programs the iptables rules that load-balance Services on
// a node, as kube-proxy's iptables mode does: traffic to a ClusterIP:port
// (from pods through PREROUTING, from the node itself through OUTPUT) and
// to a NodePort on any local address is DNATed to one ready endpoint picked
// at random with equal weight; a port without endpoints refuses new
// connections at once (ICMP port unreachable); client_ip session affinity
// keeps a client on its endpoint for three hours.
//
// It owns exactly the chains named <ChainPrefix>-SVC-* in the nat and
// filter tables, one jump into them from each of PREROUTING, OUTPUT and
// POSTROUTING (nat) and INPUT, FORWARD and OUTPUT (filter), and the
// iptables "recent" lists named <ChainPrefix>-AFF-*. It never changes other
// rules: the pod network's <ChainPrefix>-FWD, -IN and -MASQ (agent/podnet)
// share the prefix and are left alone, Cleanup included. It does not decide
// which Services and endpoints exist (the agent gives it a State), set
// sysctls (ip_forward) or routes, or clear conntrack entries.
//
// Render is a pure function of a Config and a State to iptables-restore
// text. Syncer applies it through an Applier: ExecApplier runs
// iptables-restore --noflush -w and iptables-save, FakeApplier is an
// in-memory table for tests. The rules follow kube-proxy's iptables
// proxier, with the layout changes below.
//
// # Layout
//
//	nat PREROUTING, OUTPUT -> P-SVC-SERVICES
//	  -d 0.0.0.i/0.0.0.63 -j P-SVC-Dii            one rule per non-empty shard
//	  ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j P-SVC-NODEPORTS
//	P-SVC-Dii (shard: ClusterIPs whose low 6 bits are i)
//	  -d VIP/32 -p tcp ... --dport 80 -j P-SVC-<hash>     one rule per Service port
//	P-SVC-NODEPORTS
//	  -p tcp ... --dport 30080 -j MARK (masquerade)    then -j P-SVC-<hash>
//	P-SVC-<hash> (one per Service port; hash of namespace/name:port/protocol)
//	  ! -s <cluster CIDR> -j MARK (masquerade)
//	  [affinity: -m recent --update ... --name P-AFF-<ep hash> -j DNAT ep, per endpoint]
//	  -p tcp -m statistic --probability 1/n [-m recent --set ...] -j DNAT ep1
//	  ...                                   1/(n-1), ..., the last unconditional
//	  (no endpoints: -j MARK (reject))
//	nat POSTROUTING -> P-SVC-POST: hairpin (P-SVC-HAIRPIN: -s ip -d ip
//	  -j MASQUERADE per local endpoint, for DNATed connections), then
//	  MASQUERADE what carries the masquerade mark (SNAT to the node's pod
//	  bridge address when Config.SNATAddress is set: a pod on another node
//	  then sees a source inside the cluster's range, which its node lets in)
//	filter INPUT, FORWARD, OUTPUT: -m mark (reject) -j P-SVC-REJECT: REJECT
//	  (a TCP reset for TCP, port unreachable for the rest)
//
// Why, with the figures measured on the machines we run on (Debian 12,
// kernel 6.18, iptables 1.8.9 on the nf_tables backend, 2 cores; each in a
// network namespace of its own; 10 endpoints per Service):
//
//   - One chain per Service port holding its endpoints' DNAT rules, no
//     chain per endpoint. On nf_tables the cost of a restore grows much
//     faster than the chains it declares: kube-proxy's layout (a chain per
//     Service and per endpoint, one restore) took 5.8-6.3 s for 1,000
//     Services and did not finish 10,000 in 240 s (BenchmarkProgram). Service
//     chains alone, all in one restore: 16 s for 10,000 (MACHINE-FACTS).
//   - Restores of at most ChainsPerRestore (500) chains. 10,000 Service
//     chains + shards in transactions of ~160/320/640/1,300/2,600 Services:
//     1.6/1.4/1.6/2.1/3.7 s in all. Programming 10,000 from empty takes
//     1.7-1.9 s (22 restores), 1,000 0.2 s.
//   - Session affinity without endpoint chains: kube-proxy jumps to the
//     endpoint chain, which records the client (recent --set) and DNATs; here
//     the DNAT rule itself carries "-m statistic ... -m recent --set": matches
//     are evaluated in order, so only the endpoint the statistic match picked
//     records the client. The check rule uses --update instead of --rcheck,
//     which refreshes the time as kube-proxy's --set in the endpoint chain
//     does. Twice the rules, no extra chain. Hairpin is likewise not a
//     per-endpoint "-s ep -j MARK" rule but one "-s ip -d ip -j MASQUERADE"
//     per local endpoint address in a small chain of its own.
//   - The dispatch split over 64 shard chains by the ClusterIP's low bits,
//     matched with a non-contiguous mask (-d 0.0.0.i/0.0.0.63). Refilling a
//     10,000-rule dispatch chain costs 1.0 s, a shard of ~160 rules 10-20 ms
//     (plus the validation below), so adding or removing a Service rewrites
//     one small shard. A new connection walks ~64 + n/64 rules, not n.
//   - No endpoints: the Service chain marks the packet (RejectMark) and the
//     filter table REJECTs marked packets, rather than kube-proxy's
//     per-Service REJECT rules in filter: the dispatch and the filter chain
//     never change when a Service loses or regains its endpoints, so that
//     change, too, rewrites one chain.
//   - Chains named from a hash of the Service port and rules rendered exactly
//     as iptables-save prints them back: a restarted agent reads the tables
//     (iptables-save, 0.6 s at 10,000), finds every unchanged chain equal and
//     writes nothing (re-sync after restart: 1.05-1.15 s at 10,000, all
//     reading and parsing; kube-proxy rewrites everything: 5.3 s at 1,000);
//     a chain that differs is replaced whole inside one
//     restore transaction, so connections never see it half-written (the
//     integration test keeps connecting while every shard is replaced).
//   - An endpoint change rewrites one chain in one restore. At 1,000
//     Services it is in force 20-24 ms after Sync is called; at 10,000
//     81-92 ms, of which 71-78 ms are iptables-restore (the Go side, which
//     reuses every unchanged Service's rendered rules: ~11 ms, 7 ms warm):
//     ~15 ms for the restore itself and
//     ~60 ms of nf_tables validating, on every commit that adds a rule with
//     a target to the nat table, every chain reachable from each base chain,
//     once per base chain (the Service chains are reachable from PREROUTING
//     and from OUTPUT: ~28 ms each at 10,000; a rule without a target costs
//     15 ms, and 47 ms with OUTPUT's jump removed). So no iptables layout
//     with both entry points meets 50 ms at 10,000 Services × 10 endpoints
//     on this kernel; measured: 29 ms at 2,000, 55 ms at 5,000. Kernels
//     that validate only the chains a commit touches (netfilter-devel, "add
//     infrastructure for chain validation on updates", May 2025) remove the
//     60 ms.
//
// Node ports are not served on 127.0.0.0/8 (that would need route_localnet
// on every interface). The node-port chain is one chain: adding a node
// port rewrites it (2 rules per node port, at most ~5,500).
package svcproxy
