// Package api holds the types of the Flotilla agent's HTTP/JSON API (v1) and a
// typed client for it. The Terraform provider, the agent's API server and the
// tests share these types, so the wire format is defined in exactly one place.
//
// It must not import anything from agent/ or provider/.
package api
