// Package provider is the Terraform provider of Flotilla: the flotilla
// provider, the flotilla_deployment resource and the flotilla_pods data
// source, built on terraform-plugin-framework.
//
// It owns the mapping between Terraform configuration/state and the agent
// API, plan-time validation and the waiting Terraform does (rollouts,
// deletions). It talks to agents only through the typed client in package
// api and must not import agent packages: whatever the agent decides
// (scheduling, status, failures) is read from the API, never recomputed here.
package provider
