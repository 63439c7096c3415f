// Package pki owns the cluster's certificate authority and the secrets the
// flotilla_cluster resource generates: the CA (ECDSA P-256), node
// certificates, the gossip key, the join token, API token hashes, and the
// *tls.Config values agents use to talk to each other.
//
// # Trust model
//
// A node certificate names exactly one node and its role: the common name is
// the node name, and its only URI SAN is flotilla://<role>/<name>, the role
// being RoleServer or RoleClient (IdentityOf reads and checks both). It has
// no DNS SANs: TLS clients check the server's IP SANs against the address
// they dialed, and peers are told apart by identity, not host name. Every
// node certificate is good for both ends of a connection (ServerAuth and
// ClientAuth), so one certificate serves RPC, raft and the API.
//
//   - Servers hold the CA key; only they issue certificates, and only they
//     can make a server certificate (IssueServer).
//   - A joining agent presents the join token and a CSR (NewCSR); it gets a
//     client certificate for the name it asks and the IP it connects from,
//     nothing else (SignJoin).
//   - Certificates are short-lived (DefaultCertValidity, a week). Agents
//     renew theirs at RenewAt with a new key, authenticated by the current
//     certificate (Renew keeps name, role and IPs), and swap it into their
//     Keypair without restarting listeners.
//   - Removing a node revokes, by name, every certificate issued to it before
//     the removal time (Identity.IssuedBefore); the callers' PeerCheck
//     applies that, and the role rules, at every handshake.
//
// The TLS configurations of a Keypair (ServerTLS, ClientTLS, PeerTLS) read
// the current certificate at each handshake and run the caller's PeerCheck on
// the verified peer's Identity; JoinTLS is for an agent with no certificate
// yet. The older Issue, SignCSR and the package-level ServerTLS, ClientTLS
// and PeerTLS predate roles and are deprecated.
//
// The agent keeps only TokenHash of its API token; TokenMatches compares in
// constant time.
//
// It uses only the standard library (crypto/x509, crypto/tls) and the api
// package (for the names of roles), so the
// Terraform provider can call it in-process. It must not read or write files,
// and must not import other agent packages.
package pki
