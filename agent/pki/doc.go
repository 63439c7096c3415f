// Package pki owns the cluster's certificate authority and the secrets the
// flotilla_cluster resource generates: the CA (ECDSA P-256), node
// certificates (issued directly on servers, or signed from a CSR for agents
// that join with the token), the gossip key and the join token, and the
// *tls.Config values agents use to talk to each other.
//
// Every node certificate is good for both ends of a connection
// (ExtKeyUsageServerAuth and ExtKeyUsageClientAuth), so one certificate serves
// RPC, raft and the API. Peers are trusted because the cluster CA signed them;
// there are no roles in certificates.
//
// It uses only the standard library (crypto/x509, crypto/tls), so the
// Terraform provider can call it in-process. It must not read or write files,
// and must not import other agent packages.
package pki
