data "flotilla_pods" "web" {
  namespace  = "shop"
  deployment = flotilla_deployment.web.name
}

output "web_ips" {
  description = "IPs of the ready web pods."
  value       = data.flotilla_pods.web.ips
}

output "web_pods_by_node" {
  value = { for p in data.flotilla_pods.web.pods : p.name => p.node }
}
