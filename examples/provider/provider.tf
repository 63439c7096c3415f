terraform {
  required_providers {
    flotilla = {
      source = "flotilla-io/flotilla"
    }
  }
}

# Talk to any agent of the cluster. Both settings can also come from the
# environment: FLOTILLA_ADDR and FLOTILLA_TOKEN.
provider "flotilla" {
  address = "http://10.0.0.5:7400"
  token   = var.flotilla_token
}

variable "flotilla_token" {
  type      = string
  sensitive = true
}
