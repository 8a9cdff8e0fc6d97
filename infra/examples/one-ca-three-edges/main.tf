# One Lanyard CA feeding three AWS edges: CloudFront, an Application Load Balancer and an
# API Gateway custom domain, all reading the same S3 feed. The CA writes it with
#
#   lanyard-ca publish --dir /var/lib/lanyard-ca --s3 s3://example-lanyard-feed/fleet
#
# (or, for the serverless CA, its publication bucket with prefix ""). Each apply takes the
# object versions of what it reads, so a new bundle or CRL reaches an edge on the next
# apply:
#
#   v() { aws s3api head-object --bucket example-lanyard-feed --key "fleet/$1" --query VersionId --output text; }
#   terraform apply -var bundle_version=$(v ca-bundle.pem) \
#     -var issuing_crl_version=$(v crl/issuing.crl) -var root_crl_version=$(v crl/root.crl)
#
# Revocation reaches each edge its own way (infra/README.md compares them): CloudFront
# through the KeyValueStore (sync-revocations.py with the feed's revoked.json), the ALB
# through the CRLs at their new versions, API Gateway through the backend or an authorizer.

terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.28, < 7.0" # trust stores, connection functions, viewer_mtls_config
    }
  }
}

# Everything in us-east-1 here (CloudFront's ACM certificate must be there); the ALB and API
# Gateway may live elsewhere with a feed bucket in their region.
provider "aws" {
  region = "us-east-1"
}

provider "aws" {
  alias  = "bundle"
  region = "us-east-1"
}

variable "feed_bucket" {
  description = "The bucket the CA publishes its feed to (versioning on)."
  type        = string
  default     = "example-lanyard-feed"
}

variable "feed_prefix" {
  description = "The prefix given to `lanyard-ca publish --s3`."
  type        = string
  default     = "fleet"
}

variable "bundle_version" {
  description = "Object version of PREFIX/ca-bundle.pem."
  type        = string
}

variable "issuing_crl_version" {
  description = "Object version of PREFIX/crl/issuing.crl."
  type        = string
}

variable "root_crl_version" {
  description = "Object version of PREFIX/crl/root.crl."
  type        = string
}

locals {
  tags = { project = "lanyard-one-ca-three-edges" }
}

module "cloudfront" {
  source = "../../modules/cloudfront-mtls"
  providers = {
    aws        = aws
    aws.bundle = aws.bundle
  }
  name        = "example-cdn"
  domain_name = "cdn.example.com"
  zone_id     = "Z0123456789EXAMPLE"
  ca_bundle_s3 = {
    bucket  = var.feed_bucket
    key     = "${var.feed_prefix}/ca-bundle.pem"
    version = var.bundle_version
  }
  tags = local.tags
}

module "alb" {
  source            = "../../modules/alb-mtls"
  name              = "example-devices"
  load_balancer_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/example/0123456789abcdef"
  certificate_arn   = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  target_group_arn  = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/example/0123456789abcdef"
  feed = {
    bucket              = var.feed_bucket
    prefix              = var.feed_prefix
    bundle_version      = var.bundle_version
    issuing_crl_version = var.issuing_crl_version
    root_crl_version    = var.root_crl_version
  }
  tags = local.tags
}

module "api" {
  source          = "../../modules/apigw-mtls"
  domain_name     = "api.example.com"
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  api_id          = "a1b2c3d4e5"
  feed = {
    bucket         = var.feed_bucket
    prefix         = var.feed_prefix
    bundle_version = var.bundle_version
  }
  tags = local.tags
}

output "cloudfront_domain" {
  description = "CloudFront domain of the distribution."
  value       = module.cloudfront.distribution_domain_name
}

output "revoked_kvs_arn" {
  description = "KeyValueStore for sync-revocations.py (the feed's revoked.json)."
  value       = module.cloudfront.revoked_kvs_arn
}

output "alb_listener_arn" {
  description = "The ALB's mTLS listener."
  value       = module.alb.listener_arn
}

output "api_target_domain_name" {
  description = "Regional target for api.example.com's DNS alias."
  value       = module.api.target_domain_name
}
