// Package apiserver serves the agent's HTTP/JSON API (v1) that the Terraform
// provider calls: authentication, input validation, and translation between
// HTTP and the replicated state. It holds no state of its own.
package apiserver
