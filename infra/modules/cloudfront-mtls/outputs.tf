output "distribution_domain_name" {
  description = "CloudFront domain of the distribution (the alias target)."
  value       = aws_cloudfront_distribution.this.domain_name
}

output "distribution_id" {
  description = "CloudFront distribution id."
  value       = aws_cloudfront_distribution.this.id
}

output "trust_store_id" {
  description = "Id of the CloudFront trust store reading the Lanyard CA bundle."
  value       = aws_cloudfront_trust_store.this.id
}

output "revoked_kvs_arn" {
  description = "ARN of the KeyValueStore of revoked serials (give it to sync-revocations.py)."
  value       = aws_cloudfront_key_value_store.revoked.arn
}

output "bundle_bucket" {
  description = "Bucket holding ca-bundle.pem (the module's own, or the feed's)."
  value       = local.own_bundle ? aws_s3_bucket.bundle[0].bucket : var.ca_bundle_s3.bucket
}

output "origin_bucket" {
  description = "Private origin bucket (upload the site's content here)."
  value       = aws_s3_bucket.origin.bucket
}

output "log_bucket" {
  description = "Access log bucket."
  value       = aws_s3_bucket.logs.bucket
}

output "connection_log_group" {
  description = "CloudWatch log group of the distribution's connection logs (null when connection_logs is false)."
  value       = one(aws_cloudwatch_log_group.connections[*].name)
}
