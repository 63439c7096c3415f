// Package clusterdns is the node agent's DNS server for pods: it answers the
// names of Services and pods under the cluster domain from an in-memory view
// and forwards every other name to the node's upstream resolvers.
//
// Names (Domain "cluster.local" by default; case-insensitive):
//
//	<service>.<namespace>.svc.<domain>                A/AAAA: the ClusterIP, or for a
//	                                                  headless service (no ClusterIP)
//	                                                  the addresses of its ready endpoints
//	_<port>._<proto>.<service>.<namespace>.svc.<domain>  SRV 0 100 <port> <service name>,
//	                                                  with the service's addresses as
//	                                                  additional records (named ports only)
//	<pod>.<namespace>.pod.<domain>                    A/AAAA: the pod's IP
//
// Pods are named by their names, not by Kubernetes' dashed-IP form
// (10-1-2-3.<ns>.pod.<domain>) nor by hostname.subdomain: Flotilla's pods have
// unique names per namespace, and a name is what a person looks up. A name
// under the domain that is not in the view gets NXDOMAIN; a name that exists
// (or has names below it, as <namespace>.svc.<domain>) asked for a type it has
// no records of gets NOERROR with no answer (NODATA). Both carry the zone's SOA
// in the authority section, whose TTL and minimum are Config.NegativeTTL.
// Names under the domain are never forwarded.
//
// The view is a snapshot: the agent calls Server.Update with every Service and
// pod it knows, from its local state; the server indexes them into a new
// immutable zone, with each answer pre-encoded, and swaps it in atomically.
// Queries never lock against updates and never reach the agent's state.
//
// UDP is served by one socket per CPU on each listen address (SO_REUSEPORT),
// each read by its own goroutine that answers cluster names from the
// pre-encoded bytes without allocating; anything else (other query types,
// EDNS versions, truncation, forwarding) takes a general path built on
// github.com/miekg/dns, which also serves TCP. Forwarding runs at most
// Config.MaxForwards queries at once and answers REFUSED beyond that.
//
// The package owns its sockets and goroutines, which Close (or the end of the
// context given to Start) stops. It does not touch the pods' resolv.conf files:
// PodResolvConf renders one, and the agent writes it.
package clusterdns
