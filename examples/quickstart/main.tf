# A local Flotilla: `make quickstart` starts a dev agent and applies this.
terraform {
  required_providers {
    flotilla = {
      source = "flotilla-io/flotilla"
    }
  }
}

# Reads FLOTILLA_ADDR and FLOTILLA_TOKEN (the dev agent writes its token to
# /var/lib/flotilla/token).
provider "flotilla" {}

variable "replicas" {
  type    = number
  default = 3
}

variable "ingress_port" {
  description = "The agent's --ingress-http-port."
  type        = number
  default     = 8080
}

variable "image" {
  type    = string
  default = "flotilla.local/demo:v1"
}

resource "flotilla_deployment" "web" {
  name     = "web"
  replicas = var.replicas
  labels = {
    app = "web"
  }

  container {
    name  = "web"
    image = var.image
    env = {
      GREETING = "hello from flotilla"
    }
    port {
      container_port = 8080
    }
    # A replica is ready (for the rollout and the urls below) once the app
    # answers on /healthz.
    readiness_probe {
      http_get {
        path = "/healthz"
        port = 8080
      }
      period_seconds = 2
    }
    cpu_limit    = 250
    memory_limit = 64
  }
}

# One stable address in front of the replicas: every node load balances
# connections to cluster_ip:80 over the ready ones, whatever their pod IPs.
resource "flotilla_service" "demo" {
  name     = "web"
  selector = flotilla_deployment.web.labels
  port {
    port        = 80
    target_port = "8080"
  }
}

# HTTP from outside: every agent's ingress proxy (port 8080 by default)
# sends requests for any host to the service's ready pods.
resource "flotilla_ingress" "demo" {
  name = "web"
  rule {
    path {
      path    = "/"
      service = flotilla_service.demo.name
      port    = 80
    }
  }
}

data "flotilla_pods" "web" {
  deployment = flotilla_deployment.web.name
  # Read the pods once the rollout is complete.
  depends_on = [flotilla_deployment.web]
}

output "urls" {
  description = "Where each replica of the app answers."
  value       = [for ip in data.flotilla_pods.web.ips : "http://${ip}:8080/"]
}

output "service_url" {
  description = "The service in front of the replicas; it answers on this machine (the agent routes the service range locally)."
  value       = "http://${flotilla_service.demo.cluster_ip}:80/"
}

output "ingress_url" {
  description = "The app through this agent's ingress proxy (--ingress-http-port, 8080)."
  value       = "http://127.0.0.1:${var.ingress_port}/"
  depends_on  = [flotilla_ingress.demo]
}
