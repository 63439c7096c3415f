// Package apiserver serves the agent's HTTP/JSON API (v1) that the Terraform
// provider and operators call: authentication (the API token's hash),
// input validation, and translation between HTTP and the replicated state.
// On a client agent, which holds no cluster state, it answers what is local
// to the node (status, images, metrics, profiles) and proxies the rest to a
// server (proxy.go). It keeps no state of its own beyond which servers
// failed a moment ago.
package apiserver
