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
  description = "Path to the CA bundle written by `lanyard-ca init` (DIR/ca-bundle.pem), uploaded to a bucket of the module's own. A change of its content updates the trust store on the next apply. Give this or ca_bundle_s3."
  type        = string
  default     = null
}

variable "ca_bundle_s3" {
  description = "The bundle where the CA's S3 feed keeps it (`lanyard-ca publish --s3`, or the serverless CA's bucket): bucket, key (PREFIX/ca-bundle.pem), object version, and the bucket's region (the aws.bundle provider's). The same object can feed ALB and API Gateway trust stores (modules alb-mtls, apigw-mtls). Give this or ca_bundle_path."
  type = object({
    bucket  = string
    key     = string
    version = string
    region  = optional(string, "us-east-1")
  })
  default = null
  validation {
    condition     = (var.ca_bundle_s3 == null) != (var.ca_bundle_path == null)
    error_message = "Give the CA bundle one way: ca_bundle_path (a local file) or ca_bundle_s3 (the CA's S3 feed)."
  }
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

variable "advertise_trust_store_ca_names" {
  description = "Send the trust store's CA names in the TLS CertificateRequest, so a client holding several certificates picks the one this CA issued."
  type        = bool
  default     = true
}

variable "ignore_certificate_expiry" {
  description = "Accept expired client certificates (CloudFront then checks the chain only). Leave it false: Lanyard renews before expiry, and an expired certificate should fail."
  type        = bool
  default     = false
}

variable "custom_origin_domain" {
  description = "A custom origin (an API, an ALB) to send requests to instead of the module's private S3 bucket: its DNS name, reached over HTTPS. It receives the CloudFront-Viewer-Cert-* headers (serial, issuer, subject, SHA-256, validity, PEM) through the module's origin request policy, and is not cached."
  type        = string
  default     = null
  validation {
    condition     = var.custom_origin_domain == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.custom_origin_domain))
    error_message = "custom_origin_domain must be a lowercase DNS name (no scheme, no path)."
  }
}

variable "connection_logs" {
  description = "Deliver CloudFront's connection logs (each TLS handshake: the client certificate, accepted or refused, and what the connection function logged) to a CloudWatch log group. Refusals at the handshake appear nowhere else: the access logs only see requests."
  type        = bool
  default     = true
}

variable "connection_log_retention_days" {
  description = "How long the connection log group keeps events."
  type        = number
  default     = 365
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
