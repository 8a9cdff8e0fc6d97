variable "domain_name" {
  description = "The custom domain devices call, e.g. api.example.com."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name."
  }
}

variable "certificate_arn" {
  description = "Regional ACM certificate for the domain (the server side)."
  type        = string
}

variable "api_id" {
  description = "The API Gateway API (HTTP or REST API v2 id) the domain maps to."
  type        = string
}

variable "stage" {
  description = "The API's stage to map."
  type        = string
  default     = "$default"
}

variable "feed" {
  description = "The CA's S3 feed (`lanyard-ca publish --s3 s3://BUCKET/PREFIX`, or the serverless CA's bucket with prefix \"\"): the bucket, the prefix and the object version of ca-bundle.pem. API Gateway reads the trust store when the domain is created or this version changes, so the object must exist first: publish, then apply."
  type = object({
    bucket         = string
    prefix         = optional(string, "")
    bundle_version = string
  })
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
