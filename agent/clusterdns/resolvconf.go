package clusterdns

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Bounds of a pod's search path: glibc before 2.26 keeps 6 domains, and
// musl reads lines of at most 256 bytes, so a longer line loses domains
// silently; PodResolvConf drops the extra ones instead.
const (
	maxSearchDomains = 6
	maxSearchLine    = 255 // bytes, "search " and the newline included
	ndots            = 5   // Kubernetes' value: "a.b.svc" and shorter names try the search path first
	// A query the node's server did not answer is asked again after 1 s
	// (the resolvers' default is 5 s): the server is on the pod's own
	// node and answers in well under a millisecond, so no answer means a
	// lost packet or an agent restarting (see podnet's output rules).
	timeoutSeconds = 1
	attempts       = 3
)

// PodResolvConf renders the resolv.conf of a pod in namespace: the cluster's
// DNS server at nameserver (the pod bridge's address), the search path
// "<namespace>.svc.<domain> svc.<domain> <domain>" and "options ndots:5", as
// Kubernetes writes them, with a 1 s timeout and 3 attempts. extraSearch (the node's own search domains, say)
// follow, as far as the search line's bounds allow; those that are not
// domain names, or do not fit, are left out.
func PodResolvConf(nameserver netip.Addr, namespace, domain string, extraSearch ...string) ([]byte, error) {
	if !nameserver.IsValid() || nameserver.IsUnspecified() {
		return nil, fmt.Errorf("clusterdns: pod resolv.conf: nameserver %v is not an address; give the pod bridge's", nameserver)
	}
	origin, err := canonicalDomain(domain)
	if err != nil {
		return nil, fmt.Errorf("clusterdns: pod resolv.conf: %w", err)
	}
	origin = strings.TrimSuffix(origin, ".")
	ns := strings.ToLower(namespace)
	if !isLabel(ns) {
		return nil, fmt.Errorf("clusterdns: pod resolv.conf: namespace %q is not a DNS label", namespace)
	}
	search := []string{ns + ".svc." + origin, "svc." + origin, origin}
	lineLen := len("search \n") + len(strings.Join(search, " "))
	for _, d := range extraSearch {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if len(search) == maxSearchDomains || lineLen+1+len(d) > maxSearchLine {
			break
		}
		if !isSubdomain(d) || slices.Contains(search, d) {
			continue
		}
		search = append(search, d)
		lineLen += 1 + len(d)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "nameserver %s\n", nameserver.WithZone(""))
	fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	fmt.Fprintf(&b, "options ndots:%d timeout:%d attempts:%d\n", ndots, timeoutSeconds, attempts)
	return b.Bytes(), nil
}
