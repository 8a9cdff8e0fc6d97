# A real deployment: api.example.com behind CloudFront viewer mTLS, trusting the CA that
# `lanyard-ca init --dir /var/lib/lanyard-ca` created. Copy this folder, set the values,
# configure a state backend, then `terraform init && terraform apply`.

terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.28, < 7.0" # trust stores, connection functions, viewer_mtls_config
    }
  }
  # Keep state remote and locked, e.g.:
  # backend "s3" {
  #   bucket       = "example-terraform-state"
  #   key          = "lanyard/cloudfront-mtls.tfstate"
  #   region       = "us-east-1"
  #   use_lockfile = true
  #   encrypt      = true
  # }
}

# CloudFront and its ACM certificate live in us-east-1.
provider "aws" {
  region = "us-east-1"
}

# The CA bundle bucket; us-east-1 unless there is a reason to move it.
provider "aws" {
  alias  = "bundle"
  region = var.bundle_region
}

variable "bundle_region" {
  description = "Region of the CA bundle bucket."
  type        = string
  default     = "us-east-1"
}

variable "ca_bundle_path" {
  description = "The bundle written by lanyard-ca init."
  type        = string
  default     = "/var/lib/lanyard-ca/ca-bundle.pem"
}

module "site" {
  source = "../../modules/cloudfront-mtls"
  providers = {
    aws        = aws
    aws.bundle = aws.bundle
  }

  name           = "example-api"
  domain_name    = "api.example.com"
  zone_id        = "Z0123456789EXAMPLE"
  ca_bundle_path = var.ca_bundle_path
  bundle_region  = var.bundle_region
  mtls_mode      = "required"
  tags           = { project = "lanyard-example" }
}

output "distribution_domain_name" {
  description = "CloudFront domain of the distribution."
  value       = module.site.distribution_domain_name
}

output "revoked_kvs_arn" {
  description = "KeyValueStore for sync-revocations.py."
  value       = module.site.revoked_kvs_arn
}

output "trust_store_id" {
  description = "The trust store reading the CA bundle."
  value       = module.site.trust_store_id
}
