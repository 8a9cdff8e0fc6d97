variable "name" {
  description = "Prefix for every resource name (letters, digits and dashes)."
  type        = string
  default     = "lanyard-ca"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lowercase letters, digits or dashes."
  }
}

variable "root_key_spec" {
  description = "KMS key spec of the root CA key. Only what CloudFront's trust store accepts: ECC_NIST_P256, ECC_NIST_P384, RSA_2048, RSA_3072, RSA_4096."
  type        = string
  default     = "ECC_NIST_P384"
  validation {
    condition     = contains(["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048", "RSA_3072", "RSA_4096"], var.root_key_spec)
    error_message = "root_key_spec must be one of ECC_NIST_P256, ECC_NIST_P384, RSA_2048, RSA_3072, RSA_4096 (CloudFront refuses P-521 and others)."
  }
}

variable "issuing_key_spec" {
  description = "KMS key spec of the issuing CA key (same choices as root_key_spec)."
  type        = string
  default     = "ECC_NIST_P256"
  validation {
    condition     = contains(["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048", "RSA_3072", "RSA_4096"], var.issuing_key_spec)
    error_message = "issuing_key_spec must be one of ECC_NIST_P256, ECC_NIST_P384, RSA_2048, RSA_3072, RSA_4096."
  }
}

variable "root_generations" {
  description = "Generations of the root CA key, one KMS key each (alias <name>-root-N). Append the next number and apply before `lanyard-ca ca rotate-root --root-key-id`; drop a generation only once `lanyard-ca ca status` shows it left the bundle."
  type        = list(number)
  default     = [1]
  validation {
    condition     = length(var.root_generations) > 0 && alltrue([for g in var.root_generations : g >= 1 && floor(g) == g])
    error_message = "root_generations must list whole numbers from 1, such as [1, 2]."
  }
}

variable "issuing_generations" {
  description = "Generations of the issuing CA key, one KMS key each (alias <name>-issuing-N). Append the next number and apply before `lanyard-ca ca rotate-issuing --issuing-key-id`; drop a generation only once `lanyard-ca ca status` shows it left the bundle."
  type        = list(number)
  default     = [1]
  validation {
    condition     = length(var.issuing_generations) > 0 && alltrue([for g in var.issuing_generations : g >= 1 && floor(g) == g])
    error_message = "issuing_generations must list whole numbers from 1, such as [1, 2]."
  }
}

variable "bootstrap_domain" {
  description = "Hostname for enrolment (EST simpleenroll with a one-time token; no mTLS), e.g. enrol.ca.example.com."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.bootstrap_domain))
    error_message = "bootstrap_domain must be a lowercase DNS name."
  }
}

variable "renewal_domain" {
  description = "Hostname for renewal (EST simplereenroll, /v1/) with API Gateway mTLS against the CA bundle, e.g. renew.ca.example.com."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.renewal_domain))
    error_message = "renewal_domain must be a lowercase DNS name."
  }
}

variable "certificate_arn" {
  description = "ARN of a regional ACM certificate covering both domains (API Gateway custom domains)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "truststore_version" {
  description = "S3 object version of mtls-truststore.pem (the CA bundle and the trusted factory CAs) for the renewal domain's trust store. Null (the first apply): the renewal domain is not created yet, since API Gateway reads the trust store when it creates the domain and the bundle exists only after `lanyard-ca init --backend aws`. Set it after init; change it when the object changes (a new factory CA, a new bundle) (API Gateway does not re-read the object by itself)."
  type        = string
  default     = null
}

variable "lambda_zip" {
  description = "Path to the Lambda package: a zip holding the lanyard-ca-lambda binary named `bootstrap` (see infra/modules/serverless-ca/README.md)."
  type        = string
}

variable "lambda_architecture" {
  description = "arm64 or x86_64, matching the binary in lambda_zip."
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "reserved_concurrency" {
  description = "Most concurrent enrolment Lambdas. KMS signing is throttled per account (300/s for ECC by default): this keeps a renewal storm from using all of it."
  type        = number
  default     = 50
  validation {
    condition     = var.reserved_concurrency >= 1 && var.reserved_concurrency <= 1000
    error_message = "reserved_concurrency must be between 1 and 1000."
  }
}

variable "max_issuance_rate" {
  description = "Most issuances (enrolments and renewals) a second, for the whole deployment; 0 for no limit. Keep it below the share of the account's KMS signing quota (300/s for ECC by default) the CA may use. Each of the reserved_concurrency instances paces itself to an equal share; beyond a 2 s queue devices get 503 busy with a Retry-After spread over the backlog."
  type        = number
  default     = 50
  validation {
    condition     = var.max_issuance_rate >= 0 && var.max_issuance_rate <= 10000
    error_message = "max_issuance_rate must be between 0 (no limit) and 10000 a second."
  }
}

variable "publish_schedule" {
  description = "How often CRLs are regenerated and the bundle and revocation export republished (EventBridge expression)."
  type        = string
  default     = "rate(6 hours)"
}

variable "public_url" {
  description = "Base URL where CRLs and CA certificates are served (written into certificates: AIA, CRL distribution point), e.g. the publication bucket behind CloudFront."
  type        = string
  validation {
    condition     = can(regex("^https?://", var.public_url))
    error_message = "public_url must start with http:// or https://."
  }
}

variable "alarm_topic_arn" {
  description = "SNS topic for alarms on Lambda errors and throttles (null: alarms without actions)."
  type        = string
  default     = null
}

variable "code_signing_config_arn" {
  description = "Optional Lambda code signing configuration."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of Lambda and API access logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "revoked_kvs_arn" {
  description = "ARN of the CloudFront KeyValueStore of revoked serials (output revoked_kvs_arn of the cloudfront-mtls module). The publish function keeps it in step; null: no sync."
  type        = string
  default     = null
}
