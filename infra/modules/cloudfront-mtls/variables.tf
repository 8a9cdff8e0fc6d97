variable "name" {
  description = "Prefix for resource names (lowercase letters, digits, dashes)."
  type        = string
  validation {
    # S3 allows a bucket_prefix of at most 37 characters; the longest here is
    # "<name>-origin-" (8 more).
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,27}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 29 lowercase letters, digits or dashes (it prefixes S3 bucket names, at most 37 characters with their suffix)."
  }
}

variable "domain_name" {
  description = "The site's hostname, e.g. api.example.com (a record in zone_id)."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name."
  }
}

variable "zone_id" {
  description = "Route53 hosted zone that holds domain_name (for ACM validation and the alias records)."
  type        = string
  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,32}$", var.zone_id))
    error_message = "zone_id must be a Route53 hosted zone id (Z...)."
  }
}

variable "ca_bundle_path" {
  description = "Path to the CA bundle written by `lanyard-ca init` (DIR/ca-bundle.pem). A change of its content updates the trust store on the next apply."
  type        = string
}

variable "bundle_region" {
  description = "Region of the bucket that holds the bundle (must match the aws.bundle provider). us-east-1 unless you have a reason."
  type        = string
  default     = "us-east-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.bundle_region))
    error_message = "bundle_region must be an AWS region name such as us-east-1."
  }
}

variable "mtls_mode" {
  description = "Viewer mTLS mode: required (no certificate, no handshake) or optional (the origin sees CloudFront-Viewer-Cert-Present)."
  type        = string
  default     = "required"
  validation {
    condition     = contains(["required", "optional"], var.mtls_mode)
    error_message = "mtls_mode must be required or optional (passthrough is not in the Terraform provider yet)."
  }
}

variable "revocation_at_edge" {
  description = "Associate the connection function that denies serials listed in the KeyValueStore."
  type        = bool
  default     = true
}

variable "content_security_policy" {
  description = "Content-Security-Policy sent with every response."
  type        = string
  default     = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
}

variable "web_acl_id" {
  description = "Optional AWS WAF web ACL (ARN) for the distribution."
  type        = string
  default     = null
}

variable "price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_100"
  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.price_class)
    error_message = "price_class must be PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
