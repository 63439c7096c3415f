variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "cluster_name" {
  description = "Name of the Flotilla cluster (a lower-case DNS label)."
  type        = string
  default     = "demo"
}

variable "vpc_cidr" {
  description = "Range of the VPC; the nodes' subnet is its second /24. Must not overlap the cluster's pod_cidr (10.244.0.0/16) or service_cidr (10.96.0.0/16)."
  type        = string
  default     = "10.0.0.0/16"
}

variable "clients" {
  description = "Number of client VMs (nodes that only run pods)."
  type        = number
  default     = 2
}

variable "instance_type" {
  description = "EC2 instance type of every node."
  type        = string
  default     = "t3.medium"
}

variable "agent_url" {
  description = "https URL of a linux/amd64 flotilla-agent binary the VMs download at boot (e.g. a release asset, or an S3 object the VMs may read)."
  type        = string
}

variable "agent_sha256" {
  description = "SHA-256 of the binary at agent_url (sha256sum prints it). The VMs install and run only a download that matches."
  type        = string
}

variable "api_allowed_cidrs" {
  description = "Who may reach the agents' API on port 7400: the network terraform runs from."
  type        = list(string)
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH to the nodes; null for none."
  type        = string
  default     = null
}

variable "image" {
  description = "Image of the example deployment; it must answer HTTP on port 80."
  type        = string
  default     = "docker.io/library/nginx:1.27"
}
