package fleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// TLSVerifier is the PeerVerifier of a fleet agent: it opens a TLS
// connection to the member's raft address with this node's certificate
// and checks the certificate there (signed by the cluster CA, issued for
// that IP, naming the member with the role it claims), then hangs up.
type TLSVerifier struct {
	Keypair *pki.Keypair
}

var _ PeerVerifier = (*TLSVerifier)(nil)

// VerifyPeer implements PeerVerifier.
func (v *TLSVerifier) VerifyPeer(ctx context.Context, raftAddr, name, role string) error {
	host, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return fmt.Errorf("raft address %q: %w", raftAddr, err)
	}
	cfg := v.Keypair.ClientTLS(pki.RequireNode(role, name))
	cfg.ServerName = host
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", raftAddr)
	if err != nil {
		return fmt.Errorf("TLS handshake with %s: %w", raftAddr, err)
	}
	return c.Close()
}
