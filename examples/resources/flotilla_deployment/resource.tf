resource "flotilla_deployment" "web" {
  name      = "web"
  namespace = "shop"
  replicas  = 3

  labels = {
    app  = "web"
    tier = "frontend"
  }

  # Spread the replicas over nodes and zones (the default; "bin_pack" fills
  # the busiest nodes first), never two on one node, and preferably not in a
  # zone that runs one already.
  placement = "spread"
  anti_affinity {
    labels = {
      app = "web"
    }
    required = true
  }
  anti_affinity {
    labels = {
      app = "web"
    }
    topology = "zone"
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

    # A pod gets traffic, and counts as ready in a rollout, once /healthz
    # answers; a container whose port stops accepting connections for 30 s
    # is restarted.
    readiness_probe {
      http_get {
        path = "/healthz"
        port = 8080
      }
      period_seconds = 5
    }
    liveness_probe {
      tcp_socket {
        port = 8080
      }
      initial_delay_seconds = 10
      failure_threshold     = 3
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

# A singleton on the nodes labelled disk=ssd that must never run twice: if
# its node is cut off from the servers, it stops its copy before the
# servers start a new one elsewhere.
resource "flotilla_deployment" "ledger" {
  name         = "ledger"
  namespace    = "shop"
  replicas     = 1
  self_fencing = true

  node_selector = {
    disk = "ssd"
  }

  container {
    name  = "ledger"
    image = "registry.example.com/shop/ledger:2.0.1"

    readiness_probe {
      exec {
        command = ["/ledger", "check"]
      }
    }

    memory_request = 512

    # Narrower than the default sandbox: a uid of its own, nothing written
    # outside /dev/shm and /run, no capabilities but binding port 80, and at
    # most 256 processes and threads.
    pids_limit = 256
    security {
      run_as_user               = 10001
      run_as_group              = 10001
      read_only_root_filesystem = true
      capabilities {
        drop = ["ALL"]
        add  = ["NET_BIND_SERVICE"]
      }
    }
  }
}
