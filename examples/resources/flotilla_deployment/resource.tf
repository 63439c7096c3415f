resource "flotilla_deployment" "web" {
  name      = "web"
  namespace = "shop"
  replicas  = 3

  labels = {
    app  = "web"
    tier = "frontend"
  }

  container {
    name  = "web"
    image = "registry.example.com/shop/web:1.4.2"
    args  = ["--listen", ":8080"]

    env = {
      LOG_LEVEL = "info"
    }

    port {
      name           = "http"
      container_port = 8080
    }

    cpu_request    = 250 # millicores
    cpu_limit      = 1000
    memory_request = 128 # MiB
    memory_limit   = 256
  }

  # A sidecar shares the pod's IP with the main container.
  container {
    name    = "metrics"
    image   = "registry.example.com/shop/exporter:0.9"
    command = ["/exporter", "--port", "9100"]

    port {
      container_port = 9100
    }
  }

  timeouts {
    create = "10m"
    update = "10m"
  }
}
