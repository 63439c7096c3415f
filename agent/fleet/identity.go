package fleet

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
)

// IdentityConfig says who this agent is and how it gets its certificate.
type IdentityConfig struct {
	NodeName string
	Server   bool
	// AdvertiseIP is the address other agents reach this one at: the one
	// IP the certificate names.
	AdvertiseIP net.IP
	// Dir holds node.pem and node-key.pem.
	Dir   string
	CAPEM []byte
	// CA is the cluster CA with its key: servers issue their own
	// certificates with it. Nil on clients.
	CA *pki.CA
	// JoinToken gets a client its first certificate from a server.
	JoinToken string
	// Servers returns the RPC addresses (host:port) of servers to join and
	// renew through, in the order to try them.
	Servers func() []string
	// Validity of the certificates this agent gets (servers issue them
	// with it; clients get what the server grants). 0 means
	// pki.DefaultCertValidity.
	Validity time.Duration
	// RetryInterval between rounds of join attempts; 0 means 2s.
	RetryInterval time.Duration
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Identity is this agent's certificate, kept current: LoadIdentity gets
// it, Run renews it before it expires.
type Identity struct {
	cfg     IdentityConfig
	log     *slog.Logger
	Keypair *pki.Keypair
}

func (c *IdentityConfig) defaults() {
	if c.Validity <= 0 {
		c.Validity = pki.DefaultCertValidity
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Servers == nil {
		c.Servers = func() []string { return nil }
	}
}

func (c *IdentityConfig) role() string {
	if c.Server {
		return pki.RoleServer
	}
	return pki.RoleClient
}

func (c *IdentityConfig) paths() (cert, key string) {
	return filepath.Join(c.Dir, "node.pem"), filepath.Join(c.Dir, "node-key.pem")
}

// LoadIdentity returns this agent's certificate: the one kept from an
// earlier start if it still names this node, role and address and has not
// expired (on a server: is not due for renewal either; a client renews in
// Run, so it starts while no server answers); else a new one, issued with
// the CA key on a server or obtained from a server with the join token on
// a client (retrying until ctx ends while no server answers).
func LoadIdentity(ctx context.Context, cfg IdentityConfig) (*Identity, error) {
	cfg.defaults()
	id := &Identity{cfg: cfg, log: cfg.Logger.With("component", "identity")}
	certPath, keyPath := cfg.paths()
	if certPEM, err := os.ReadFile(certPath); err == nil {
		keyPEM, _ := os.ReadFile(keyPath)
		kp, err := pki.NewKeypair(cfg.CAPEM, certPEM, keyPEM)
		switch {
		case err != nil:
			id.log.Warn("the saved node certificate is unusable; getting a new one", "err", err)
		case !id.matches(kp.Identity()):
			id.log.Info("the saved node certificate names another node, role or address; getting a new one", "certificate", kp.Identity().String(), "ips", kp.Identity().IPs)
		case !cfg.Now().Before(kp.Leaf().NotAfter):
			id.log.Info("the saved node certificate expired; getting a new one", "expired", kp.Leaf().NotAfter)
		case cfg.CA != nil && !cfg.Now().Before(renewAt(kp.Leaf())):
			// A server issues its own at once. A client keeps one due for
			// renewal and renews it in Run: it must start (and keep its
			// pods) even while no server answers.
			id.log.Info("the saved node certificate is due for renewal; issuing a new one", "expires", kp.Leaf().NotAfter)
		default:
			id.Keypair = kp
			return id, nil
		}
	}
	certPEM, keyPEM, err := id.obtain(ctx)
	if err != nil {
		return nil, err
	}
	kp, err := pki.NewKeypair(cfg.CAPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the new node certificate is unusable: %w", err)
	}
	if err := id.save(certPEM, keyPEM); err != nil {
		return nil, err
	}
	id.Keypair = kp
	return id, nil
}

func (id *Identity) matches(got pki.Identity) bool {
	return got.Name == id.cfg.NodeName && got.Role == id.cfg.role() && slices.ContainsFunc(got.IPs, id.cfg.AdvertiseIP.Equal)
}

// obtain gets a new certificate and key: issued here on a server, by
// joining on a client.
func (id *Identity) obtain(ctx context.Context) (certPEM, keyPEM []byte, err error) {
	if id.cfg.CA != nil {
		certPEM, keyPEM, err = id.cfg.CA.IssueServer(id.cfg.NodeName, []net.IP{id.cfg.AdvertiseIP}, id.cfg.Validity)
		if err != nil {
			return nil, nil, fmt.Errorf("issue this server's certificate: %w", err)
		}
		return certPEM, keyPEM, nil
	}
	if id.cfg.Server {
		return nil, nil, errors.New("a server needs the CA key (--ca-key-file) to issue its certificate")
	}
	for attempt := 1; ; attempt++ {
		var errs []error
		for _, addr := range id.cfg.Servers() {
			certPEM, keyPEM, err = rpc.Join(ctx, addr, id.cfg.CAPEM, id.cfg.JoinToken, id.cfg.NodeName, id.cfg.AdvertiseIP, 10*time.Second)
			if err == nil {
				id.log.Info("joined: a server signed this node's certificate", "server", addr)
				return certPEM, keyPEM, nil
			}
			if errors.Is(err, rpc.ErrJoinTokenRejected) {
				return nil, nil, fmt.Errorf("join the fleet through %s: %w", addr, err)
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			errs = append(errs, errors.New("no server address known"))
		}
		id.log.Warn("join: no certificate yet; retrying", "attempt", attempt, "every", id.cfg.RetryInterval, "err", errors.Join(errs...))
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("join the fleet: %w (last errors: %v)", ctx.Err(), errors.Join(errs...))
		case <-time.After(id.cfg.RetryInterval):
		}
	}
}

// save writes the certificate and key so that a restart keeps them,
// each replacing the old file at once (a crash leaves one or the other).
func (id *Identity) save(certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(id.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("save node certificate: %w", err)
	}
	certPath, keyPath := id.cfg.paths()
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("save node key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("save node certificate: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// renewAt is when a certificate is due for renewal.
func renewAt(leaf *x509.Certificate) time.Time { return pki.RenewAt(leaf.NotBefore, leaf.NotAfter) }

// Renewer gets a renewed certificate for kp from a server.
type Renewer interface {
	Renew(ctx context.Context, addr string, kp *pki.Keypair) (certPEM, keyPEM []byte, err error)
}

// Run renews the certificate before it expires, without a restart: the
// new one is saved and swapped into the Keypair, so every TLS
// configuration made from it presents it at the next handshake. Servers
// issue it with the CA key; clients ask a server (r), falling back to
// joining again if their certificate expired meanwhile. Run returns when
// ctx ends.
func (id *Identity) Run(ctx context.Context, r Renewer) {
	for {
		leaf := id.Keypair.Leaf()
		due := renewAt(leaf)
		// Jitter, so a fleet started together does not renew together.
		due = due.Add(-time.Duration(rand.Int64N(int64(leaf.NotAfter.Sub(leaf.NotBefore)/20) + 1)))
		wait := due.Sub(id.cfg.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if err := id.renew(ctx, r); err != nil {
			if ctx.Err() != nil {
				return
			}
			id.log.Warn("renew the node certificate; retrying in a minute", "expires", id.Keypair.Leaf().NotAfter, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
			continue
		}
		id.log.Info("renewed the node certificate", "expires", id.Keypair.Leaf().NotAfter)
	}
}

func (id *Identity) renew(ctx context.Context, r Renewer) error {
	var certPEM, keyPEM []byte
	var err error
	switch {
	case id.cfg.CA != nil:
		certPEM, keyPEM, err = id.obtain(ctx)
	case id.cfg.Now().After(id.Keypair.Leaf().NotAfter):
		// Expired: no server accepts it to renew with; join again.
		certPEM, keyPEM, err = id.obtain(ctx)
	default:
		var errs []error
		for _, addr := range id.cfg.Servers() {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			certPEM, keyPEM, err = r.Renew(rctx, addr, id.Keypair)
			cancel()
			if err == nil {
				break
			}
			errs = append(errs, err)
		}
		if certPEM == nil {
			if len(errs) == 0 {
				errs = append(errs, errors.New("no server address known"))
			}
			err = errors.Join(errs...)
		}
	}
	if err != nil {
		return err
	}
	if err := id.Keypair.Set(certPEM, keyPEM); err != nil {
		return err
	}
	return id.save(certPEM, keyPEM)
}
