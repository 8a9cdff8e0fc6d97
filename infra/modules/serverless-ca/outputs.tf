output "table_name" {
  description = "DynamoDB table of the CA (LANYARD_AWS_TABLE for the admin CLI)."
  value       = aws_dynamodb_table.ca.name
}

output "bucket_name" {
  description = "Publication bucket: ca-bundle.pem, mtls-truststore.pem, crl/, revoked.json (LANYARD_AWS_BUCKET)."
  value       = aws_s3_bucket.publications.bucket
}

output "root_key_id" {
  description = "KMS key id of the newest root generation (LANYARD_AWS_ROOT_KEY_ID for `lanyard-ca init --backend aws`, --root-key-id for `ca rotate-root`)."
  value       = aws_kms_key.root[local.latest.root].key_id
}

output "issuing_key_id" {
  description = "KMS key id of the newest issuing generation (LANYARD_AWS_ISSUING_KEY_ID for init, --issuing-key-id for `ca rotate-issuing` and `ca rotate-root`)."
  value       = aws_kms_key.issuing[local.latest.issuing].key_id
}

output "root_key_ids" {
  description = "KMS key id of every root generation, by generation."
  value       = { for g, k in aws_kms_key.root : g => k.key_id }
}

output "issuing_key_ids" {
  description = "KMS key id of every issuing generation, by generation."
  value       = { for g, k in aws_kms_key.issuing : g => k.key_id }
}

output "rotate_issuing_command" {
  description = "The `lanyard-ca ca rotate-issuing` onto the newest issuing generation (after appending it to issuing_generations and applying)."
  value       = "LANYARD_CA_BACKEND=aws LANYARD_AWS_TABLE=${aws_dynamodb_table.ca.name} LANYARD_AWS_BUCKET=${aws_s3_bucket.publications.bucket} lanyard-ca ca rotate-issuing --issuing-key-id ${aws_kms_key.issuing[local.latest.issuing].key_id}"
}

output "bootstrap_target" {
  description = "Regional target for the enrolment hostname's DNS alias."
  value       = aws_apigatewayv2_domain_name.bootstrap.domain_name_configuration[0].target_domain_name
}

output "renewal_target" {
  description = "Regional target for the renewal hostname's DNS alias (null until truststore_version is set: the second apply creates the domain)."
  value       = one(aws_apigatewayv2_domain_name.renewal[*].domain_name_configuration[0].target_domain_name)
}

output "functions" {
  description = "Lambda function names."
  value       = { http = aws_lambda_function.http.function_name, publish = aws_lambda_function.publish.function_name }
}

output "init_command" {
  description = "The one-time `lanyard-ca init` for this deployment: the table, bucket and KMS keys made here, and public_url written into every certificate (AIA, CRL distribution point)."
  value       = "LANYARD_CA_BACKEND=aws LANYARD_AWS_TABLE=${aws_dynamodb_table.ca.name} LANYARD_AWS_BUCKET=${aws_s3_bucket.publications.bucket} LANYARD_AWS_ROOT_KEY_ID=${aws_kms_key.root[local.latest.root].key_id} LANYARD_AWS_ISSUING_KEY_ID=${aws_kms_key.issuing[local.latest.issuing].key_id} lanyard-ca init --public-url ${var.public_url}"
}

output "rotate_root_command" {
  description = "The `lanyard-ca ca rotate-root` onto the newest root and issuing generations (after appending both to root_generations and issuing_generations and applying)."
  value       = "LANYARD_CA_BACKEND=aws LANYARD_AWS_TABLE=${aws_dynamodb_table.ca.name} LANYARD_AWS_BUCKET=${aws_s3_bucket.publications.bucket} lanyard-ca ca rotate-root --root-key-id ${aws_kms_key.root[local.latest.root].key_id} --issuing-key-id ${aws_kms_key.issuing[local.latest.issuing].key_id}"
}
