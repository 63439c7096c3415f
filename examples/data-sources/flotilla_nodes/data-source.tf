# Wait until five nodes are ready (the VMs booted and joined) before
# anything that depends on this data source is created.
data "flotilla_nodes" "all" {
  api_connection = flotilla_cluster.main.api_connection
  min_ready      = 5
  depends_on     = [aws_instance.server, aws_instance.client]
}

output "node_addresses" {
  value = { for n in data.flotilla_nodes.all.nodes : n.name => n.address }
}

output "servers" {
  value = [for n in data.flotilla_nodes.all.nodes : n.name if n.server]
}

# What each node that takes new pods offers them: its capacity minus what
# is reserved for the system (cordoned and draining nodes take none).
output "schedulable" {
  value = {
    for n in data.flotilla_nodes.all.nodes : n.name => {
      cpu_millis = n.cpu_millis - n.reserved_cpu_millis
      memory_mib = n.memory_mib - n.reserved_memory_mib
    } if n.status == "ready" && !n.unschedulable
  }
}
