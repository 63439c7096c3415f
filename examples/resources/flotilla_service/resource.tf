# One address in front of the web deployment's ready pods: connections to
# cluster_ip:80 go to a pod's port named "http", from any node or pod.
resource "flotilla_service" "web" {
  name      = "web"
  namespace = "shop"
  selector  = flotilla_deployment.web.labels

  port {
    name        = "http"
    port        = 80
    target_port = "http"
  }
  port {
    name = "metrics"
    port = 9100
  }
}

# Also reachable from outside the fleet on every node's addresses, port
# 30080; a client keeps talking to the same pod.
resource "flotilla_service" "web_public" {
  name             = "web-public"
  namespace        = "shop"
  type             = "node_port"
  session_affinity = "client_ip"
  selector = {
    app = "web"
  }

  port {
    port        = 80
    target_port = "8080"
    node_port   = 30080
  }
}

output "web_url" {
  value = "http://${flotilla_service.web.cluster_ip}/"
}
