output "endpoint" {
  description = "The fleet's API."
  value       = flotilla_cluster.main.endpoint
}

output "nodes" {
  description = "Node name => address, as the fleet reports them."
  value       = { for n in data.flotilla_nodes.all.nodes : n.name => n.address }
}

output "web_ips" {
  description = "Pod IPs of the ready web replicas (reachable from the nodes)."
  value       = data.flotilla_pods.web.ips
}

output "ca_cert_pem" {
  description = "The cluster CA, to verify the API with curl --cacert."
  value       = flotilla_cluster.main.ca_cert_pem
}
