// Package apiserver serves the agent's HTTP/JSON API (v1) that the Terraform
// provider and operators call: authentication (the API token's hash),
// input validation, and translation between HTTP and the replicated state.
// On a client agent, which holds no cluster state, it answers what is local
// to the node (status, images, metrics, profiles) and proxies the rest to a
// server (proxy.go). Container logs (logs.go) are served by whichever agent
// is asked: the pod's node from its disk, a server by asking the pod's node,
// a client by proxying to a server. Exec (exec.go) is routed the same
// way: GET /v1/namespaces/{ns}/pods/{pod}/exec with the API token,
// upgraded to a WebSocket speaking api.ExecProtocol (package execws); a
// server opens the exec on the pod's node over the agents' RPC (server
// certificates only) and relays the frames, and a client agent's proxy
// carries the upgraded connection to a server. It keeps no state of its
// own beyond which servers failed a moment ago and the log and exec
// streams it serves.
package apiserver
