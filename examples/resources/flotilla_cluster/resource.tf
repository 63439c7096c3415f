# Three servers at static private IPs, known before their VMs exist. The
# cluster generates its CA and secrets and renders the VMs' user-data.
resource "flotilla_cluster" "main" {
  name             = "prod"
  server_addresses = ["10.0.1.10", "10.0.1.11", "10.0.1.12"]

  # Optional: where VMs download flotilla-agent if their image lacks it.
  agent_url = "https://downloads.example.com/flotilla/0.1.0/flotilla-agent_linux_amd64"
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
