data "flotilla_service_endpoints" "web" {
  namespace = flotilla_service.web.namespace
  name      = flotilla_service.web.name
}

output "web_ready_endpoints" {
  description = "How many pods get the service's traffic."
  value       = data.flotilla_service_endpoints.web.ready_count
}

# pod IP:port of each ready pod, for the service port named "http".
output "web_backends" {
  value = flatten([
    for a in data.flotilla_service_endpoints.web.addresses : [
      for p in a.ports : "${a.ip}:${p.port}" if p.name == "http"
    ] if a.ready
  ])
}
