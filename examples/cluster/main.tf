# A Flotilla fleet on AWS created in one `terraform apply`: the network,
# three server VMs and two client VMs, the cluster whose user-data they boot
# with, and a deployment on it. See README.md.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
    flotilla = {
      source = "flotilla-io/flotilla"
    }
  }
}

provider "aws" {
  region = var.region
}

# No provider "flotilla" block: the fleet does not exist when this is
# planned. Everything of flotilla takes api_connection from the cluster.

locals {
  subnet_cidr = cidrsubnet(var.vpc_cidr, 8, 1)
  # Servers get static private IPs so the cluster (and so the VMs'
  # user-data) knows them before the VMs exist: no dependency cycle.
  server_ips = [for i in range(3) : cidrhost(local.subnet_cidr, 10 + i)]
}

# --- the fleet's identity ----------------------------------------------------

resource "flotilla_cluster" "main" {
  name             = var.cluster_name
  server_addresses = local.server_ips
  agent_url        = var.agent_url
  agent_sha256     = var.agent_sha256
  # Keep wait_for_nodes at 0 here: the VMs below are created after the
  # cluster. data.flotilla_nodes.all is the gate instead.
}

# --- network -------------------------------------------------------------------

data "aws_availability_zones" "available" {
  state = "available"
}

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = "flotilla-${var.cluster_name}" }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
}

resource "aws_subnet" "nodes" {
  vpc_id                  = aws_vpc.main.id
  cidr_block              = local.subnet_cidr
  availability_zone       = data.aws_availability_zones.available.names[0]
  map_public_ip_on_launch = true # to reach Debian's mirrors and agent_url
  tags                    = { Name = "flotilla-${var.cluster_name}-nodes" }
}

resource "aws_route_table" "nodes" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
}

resource "aws_route_table_association" "nodes" {
  subnet_id      = aws_subnet.nodes.id
  route_table_id = aws_route_table.nodes.id
}

resource "aws_security_group" "nodes" {
  name   = "flotilla-${var.cluster_name}-nodes"
  vpc_id = aws_vpc.main.id

  ingress {
    description = "agents among themselves: gossip, raft, RPC, API, pod traffic"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }

  ingress {
    description = "the agents' API, for terraform"
    from_port   = 7400
    to_port     = 7400
    protocol    = "tcp"
    cidr_blocks = var.api_allowed_cidrs
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# --- VMs ---------------------------------------------------------------------

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

resource "aws_instance" "server" {
  count                  = length(local.server_ips)
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.nodes.id
  private_ip             = local.server_ips[count.index]
  vpc_security_group_ids = [aws_security_group.nodes.id]
  key_name               = var.ssh_key_name

  # Holds the CA key and the cluster's secrets. A new cluster (new secrets)
  # means new VMs rather than VMs with stale files.
  user_data                   = flotilla_cluster.main.cloud_init_server
  user_data_replace_on_change = true

  # IMDSv2 with one hop: pods (one routing hop further) cannot read the
  # user-data and its secrets from the metadata service.
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = { Name = "flotilla-${var.cluster_name}-server-${count.index}" }
}

resource "aws_instance" "client" {
  count                  = var.clients
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.nodes.id
  vpc_security_group_ids = [aws_security_group.nodes.id]
  key_name               = var.ssh_key_name

  user_data                   = flotilla_cluster.main.cloud_init_client
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = { Name = "flotilla-${var.cluster_name}-client-${count.index}" }
}

# --- workloads -----------------------------------------------------------------

# The gate: read during apply, once the VMs exist, and only done when every
# node has booted, installed the agent and joined (up to 10 minutes).
data "flotilla_nodes" "all" {
  api_connection = flotilla_cluster.main.api_connection
  min_ready      = length(aws_instance.server) + length(aws_instance.client)
  depends_on     = [aws_instance.server, aws_instance.client]
}

resource "flotilla_deployment" "web" {
  api_connection = flotilla_cluster.main.api_connection

  name     = "web"
  replicas = 3
  container {
    name  = "web"
    image = var.image
    port {
      container_port = 80
    }
    cpu_request    = 100
    memory_request = 64
    memory_limit   = 128
  }

  # Create only on a fleet whose nodes are up; destroyed before the VMs.
  depends_on = [data.flotilla_nodes.all]
}

data "flotilla_pods" "web" {
  api_connection = flotilla_cluster.main.api_connection
  deployment     = flotilla_deployment.web.name
}
