variable "name" {
  description = "Name of the trust store (letters, digits and hyphens, at most 32 characters)."
  type        = string
  validation {
    condition     = can(regex("^[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$", var.name))
    error_message = "name must be 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen."
  }
}

variable "load_balancer_arn" {
  description = "The Application Load Balancer that gets the mTLS listener."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the listener (the server side), in the load balancer's region."
  type        = string
}

variable "target_group_arn" {
  description = "Where verified requests go. The target receives the client certificate in the X-Amzn-Mtls-Clientcert-* headers (serial number, issuer, subject, validity, leaf PEM)."
  type        = string
}

variable "feed" {
  description = "The CA's S3 feed (`lanyard-ca publish --s3 s3://BUCKET/PREFIX`, or the serverless CA's bucket with prefix \"\"), in the load balancer's region: the bucket, the prefix, and the object versions of ca-bundle.pem and of the CRLs crl/issuing.crl and crl/root.crl. A new version of a CRL replaces its revocation entry: republish, then apply."
  type = object({
    bucket              = string
    prefix              = optional(string, "")
    bundle_version      = string
    issuing_crl_version = string
    root_crl_version    = string
  })
}

variable "port" {
  description = "Listener port."
  type        = number
  default     = 443
}

variable "ssl_policy" {
  description = "The listener's TLS policy."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "advertise_trust_store_ca_names" {
  description = "Send the trust store's CA names in the TLS CertificateRequest."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
