# Three servers at static private IPs, known before their VMs exist. The
# cluster generates its CA and secrets and renders the VMs' user-data.
resource "flotilla_cluster" "main" {
  name             = "prod"
  server_addresses = ["10.0.1.10", "10.0.1.11", "10.0.1.12"]

  # Optional: where VMs download flotilla-agent if their image lacks it
  # (https only), and its SHA-256: a node runs only a download that matches.
  agent_url    = "https://downloads.example.com/flotilla/0.1.0/flotilla-agent_linux_amd64"
  agent_sha256 = "0f343b0931126a20f133d67c2b018a3b5e7c2a9c4d5e6f708192a3b4c5d6e7f8"
}

# Give each server VM one of server_addresses as its private IP and
# flotilla_cluster.main.cloud_init_server as its user_data; other VMs get
# cloud_init_client. Deployments reach the fleet through api_connection:
resource "flotilla_deployment" "web" {
  api_connection = flotilla_cluster.main.api_connection

  name     = "web"
  replicas = 3
  container {
    name  = "web"
    image = "registry.example.com/web:1.4"
  }
}
