// Package provider is the Terraform provider of Flotilla: the flotilla
// provider, the flotilla_cluster, flotilla_deployment, flotilla_service and
// flotilla_ingress resources and the flotilla_pods, flotilla_nodes and
// flotilla_service_endpoints data sources, built on
// terraform-plugin-framework.
//
// It owns the mapping between Terraform configuration/state and the agent
// API, plan-time validation and the waiting Terraform does (rollouts,
// deletions, a fleet booting, nodes joining). It talks to agents only through
// the typed client in package api and must not import agent packages, with
// one exception: agent/pki, a standard-library-only package that generates
// the CA and secrets flotilla_cluster keeps in state. The cloud-init
// user-data comes from templates/cloud-init. Whatever the agent decides
// (scheduling, status, failures) is read from the API, never recomputed here.
//
// Nothing calls an agent at plan time whose address is not known yet: a
// fleet, its VMs and its deployments can be created in one apply.
package provider
