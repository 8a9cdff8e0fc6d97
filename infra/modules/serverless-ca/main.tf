# The serverless Lanyard CA: keys in KMS, records in DynamoDB, publications in S3, the
# `lanyard-ca-lambda` binary behind two API Gateway hostnames (enrolment without mTLS,
# renewal with mTLS against the CA's own bundle), and a schedule that republishes CRLs.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.region
  partition = data.aws_partition.current.partition
  functions = {
    http    = "${var.name}-http"
    publish = "${var.name}-publish"
  }
  # Which functions may sign with which key: the internet-facing handler issues with the
  # issuing key only; the root key signs the root CRL, in the scheduled publisher only.
  signers = {
    root    = ["publish"]
    issuing = ["http", "publish"]
  }
  generations = {
    root    = toset([for g in var.root_generations : tostring(g)])
    issuing = toset([for g in var.issuing_generations : tostring(g)])
  }
  # Every generation's key: a retired issuing CA still signs OCSP answers and its CRL, a
  # retired root its CRL, until they leave the bundle.
  signing_arns = {
    root    = [for k in aws_kms_key.root : k.arn]
    issuing = [for k in aws_kms_key.issuing : k.arn]
  }
  latest = {
    root    = tostring(max(var.root_generations...))
    issuing = tostring(max(var.issuing_generations...))
  }
}

# ---- keys --------------------------------------------------------------------------

# Key policy: the account administers the keys; only the CA's Lambda roles that need a key
# sign with it (local.signers).
data "aws_iam_policy_document" "signing_key" {
  for_each = local.signers
  #checkov:skip=CKV_AWS_356: a key policy's "*" resource means this key only.
  #checkov:skip=CKV_AWS_109: a key policy must let the account administer the key, or the key becomes unmanageable.
  #checkov:skip=CKV_AWS_111: a key policy must let the account administer the key; the CA's roles may only sign with it.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "CaSigns"
    actions   = ["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [for f in each.value : aws_iam_role.lambda[f].arn]
    }
  }
}

# One key per CA generation. Before `lanyard-ca ca rotate-issuing` (or `rotate-root`), append
# the next generation to issuing_generations (root_generations) and apply: the new key exists
# and the roles may sign with it; pass its id (output issuing_key_ids) to the rotation. A
# retired generation stays until it has left the bundle (`lanyard-ca ca status`): its key
# still signs its CRL and OCSP answers.
resource "aws_kms_key" "root" {
  #checkov:skip=CKV_AWS_7: asymmetric SIGN_VERIFY keys cannot be rotated by KMS; a CA key is rotated by issuing a new CA.
  for_each                 = local.generations.root
  description              = "${var.name} root CA key, generation ${each.key} (Lanyard)"
  customer_master_key_spec = var.root_key_spec
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 30
  enable_key_rotation      = false
  policy                   = data.aws_iam_policy_document.signing_key["root"].json
  tags                     = var.tags
}

resource "aws_kms_key" "issuing" {
  #checkov:skip=CKV_AWS_7: asymmetric SIGN_VERIFY keys cannot be rotated by KMS; a CA key is rotated by issuing a new CA.
  for_each                 = local.generations.issuing
  description              = "${var.name} issuing CA key, generation ${each.key} (Lanyard)"
  customer_master_key_spec = var.issuing_key_spec
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 30
  enable_key_rotation      = false
  policy                   = data.aws_iam_policy_document.signing_key["issuing"].json
  tags                     = var.tags
}

# Deployments made before generations keep their keys: the single key is generation 1.
moved {
  from = aws_kms_key.root
  to   = aws_kms_key.root["1"]
}

moved {
  from = aws_kms_key.issuing
  to   = aws_kms_key.issuing["1"]
}

# Encrypts the table, the logs, the Lambda environment and the dead-letter queue.
data "aws_iam_policy_document" "data_key" {
  #checkov:skip=CKV_AWS_356: a key policy's "*" resource means this key only.
  #checkov:skip=CKV_AWS_109: a key policy must let the account administer the key, or the key becomes unmanageable.
  #checkov:skip=CKV_AWS_111: a key policy must let the account administer the key; CloudWatch Logs may only use it for its log groups.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${var.name} data key (table, logs, environment)"
  deletion_window_in_days = 30
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.data_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "root" {
  for_each      = aws_kms_key.root
  name          = "alias/${var.name}-root-${each.key}"
  target_key_id = each.value.key_id
}

resource "aws_kms_alias" "issuing" {
  for_each      = aws_kms_key.issuing
  name          = "alias/${var.name}-issuing-${each.key}"
  target_key_id = each.value.key_id
}

moved {
  from = aws_kms_alias.root
  to   = aws_kms_alias.root["1"]
}

moved {
  from = aws_kms_alias.issuing
  to   = aws_kms_alias.issuing["1"]
}

# ---- records -----------------------------------------------------------------------

resource "aws_dynamodb_table" "ca" {
  name                        = var.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }

  # Spent enrolment tokens carry a `ttl` 30 days after their expiry.
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  tags = var.tags
}

# ---- publications --------------------------------------------------------------------

resource "aws_s3_bucket" "publications" {
  #checkov:skip=CKV_AWS_145: the trust store bundle is read by API Gateway and CloudFront trust stores, which need SSE-S3, not a customer key.
  #checkov:skip=CKV_AWS_144: CRLs and the bundle are regenerated from the table; replication adds nothing a republish does not.
  #checkov:skip=CKV2_AWS_62: nothing consumes object events; the schedule republishes.
  #checkov:skip=CKV_AWS_18: access logging of public CRL fetches is left to the CloudFront distribution in front of the bucket.
  bucket_prefix = "${var.name}-pub-"
  tags          = var.tags
}

resource "aws_s3_bucket_versioning" "publications" {
  bucket = aws_s3_bucket.publications.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "publications" {
  bucket = aws_s3_bucket.publications.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "publications" {
  bucket                  = aws_s3_bucket.publications.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "publications" {
  bucket = aws_s3_bucket.publications.id
  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# ---- functions -------------------------------------------------------------------------

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  for_each           = local.functions
  name               = each.value
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

data "aws_iam_policy_document" "lambda" {
  for_each = local.functions

  statement {
    sid       = "Sign"
    actions   = ["kms:Sign", "kms:GetPublicKey"]
    resources = flatten([for k, fs in local.signers : local.signing_arns[k] if contains(fs, each.key)])
  }
  statement {
    sid       = "DataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
  }
  statement {
    sid = "Records"
    # The HTTP function issues and records; the publisher reads and numbers CRLs.
    actions = each.key == "http" ? [
      "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan",
      ] : [
      "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan",
    ]
    resources = [aws_dynamodb_table.ca.arn]
  }
  dynamic "statement" {
    for_each = each.key == "publish" ? [1] : []
    content {
      sid       = "Publish"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.publications.arn}/*"]
    }
  }
  dynamic "statement" {
    for_each = each.key == "publish" && var.revoked_kvs_arn != null ? [1] : []
    content {
      sid       = "RevokedSerialsAtTheEdge"
      actions   = ["cloudfront-keyvaluestore:DescribeKeyValueStore", "cloudfront-keyvaluestore:ListKeys", "cloudfront-keyvaluestore:UpdateKeys"]
      resources = [var.revoked_kvs_arn]
    }
  }
  dynamic "statement" {
    for_each = each.key == "publish" ? [1] : []
    content {
      sid       = "DeadLetter"
      actions   = ["sqs:SendMessage"]
      resources = [aws_sqs_queue.publish_dlq.arn]
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda[each.key].arn}:*"]
  }
}

resource "aws_iam_role_policy" "lambda" {
  for_each = local.functions
  name     = "${each.value}-least-privilege"
  role     = aws_iam_role.lambda[each.key].id
  policy   = data.aws_iam_policy_document.lambda[each.key].json
}

resource "aws_iam_role_policy_attachment" "xray" {
  for_each   = local.functions
  role       = aws_iam_role.lambda[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"
}

resource "aws_cloudwatch_log_group" "lambda" {
  for_each          = local.functions
  name              = "/aws/lambda/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
  tags              = var.tags
}

resource "aws_sqs_queue" "publish_dlq" {
  name                      = "${var.name}-publish-dlq"
  kms_master_key_id         = aws_kms_key.data.id
  message_retention_seconds = 1209600
  tags                      = var.tags
}

resource "aws_lambda_function" "http" {
  #checkov:skip=CKV_AWS_117: the CA reaches only AWS APIs (KMS, DynamoDB, S3); a VPC would add NAT cost and no isolation.
  #checkov:skip=CKV_AWS_116: the HTTP function is invoked synchronously by API Gateway; a dead-letter queue never receives anything.
  function_name                  = local.functions.http
  role                           = aws_iam_role.lambda["http"].arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  memory_size                    = 256
  timeout                        = 10
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = aws_kms_key.data.arn
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = {
      LANYARD_AWS_TABLE          = aws_dynamodb_table.ca.name
      LANYARD_LAMBDA_MODE        = "http"
      LANYARD_MAX_ISSUANCE_RATE  = tostring(var.max_issuance_rate)
      LANYARD_ISSUANCE_INSTANCES = tostring(var.reserved_concurrency)
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.lambda, aws_iam_role_policy.lambda]
  tags       = var.tags
}

resource "aws_lambda_function" "publish" {
  #checkov:skip=CKV_AWS_117: the CA reaches only AWS APIs (KMS, DynamoDB, S3); a VPC would add NAT cost and no isolation.
  function_name                  = local.functions.publish
  role                           = aws_iam_role.lambda["publish"].arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  memory_size                    = 256
  timeout                        = 60
  reserved_concurrent_executions = 1
  kms_key_arn                    = aws_kms_key.data.arn
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = merge({
      LANYARD_AWS_TABLE   = aws_dynamodb_table.ca.name
      LANYARD_AWS_BUCKET  = aws_s3_bucket.publications.bucket
      LANYARD_LAMBDA_MODE = "publish"
    }, var.revoked_kvs_arn == null ? {} : { LANYARD_AWS_KVS_ARN = var.revoked_kvs_arn })
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.publish_dlq.arn
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.lambda, aws_iam_role_policy.lambda]
  tags       = var.tags
}

# ---- schedule -------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "publish" {
  name                = "${var.name}-publish"
  description         = "Regenerate CRLs and republish the bundle and the revocation export."
  schedule_expression = var.publish_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "publish" {
  rule = aws_cloudwatch_event_rule.publish.name
  arn  = aws_lambda_function.publish.arn
}

resource "aws_lambda_permission" "schedule" {
  statement_id  = "AllowSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.publish.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.publish.arn
}

# ---- API Gateway: two hostnames --------------------------------------------------------

resource "aws_apigatewayv2_api" "ca" {
  name          = var.name
  protocol_type = "HTTP"
  # Only the custom domains reach the CA, so the renewal domain's mTLS cannot be bypassed.
  disable_execute_api_endpoint = true
  tags                         = var.tags
}

resource "aws_apigatewayv2_integration" "ca" {
  api_id                 = aws_apigatewayv2_api.ca.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.http.invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_route" "ca" {
  #checkov:skip=CKV_AWS_309: devices authenticate in the CA itself: a one-time token on the enrolment hostname, the mTLS client certificate on the renewal hostname.
  api_id    = aws_apigatewayv2_api.ca.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.ca.id}"
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.data.arn
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "ca" {
  api_id      = aws_apigatewayv2_api.ca.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = var.reserved_concurrency * 4
    throttling_rate_limit  = var.reserved_concurrency * 10
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format = jsonencode({
      requestId  = "$context.requestId"
      ip         = "$context.identity.sourceIp"
      route      = "$context.routeKey"
      status     = "$context.status"
      latency    = "$context.integrationLatency"
      domain     = "$context.domainName"
      certSerial = "$context.identity.clientCert.serialNumber"
    })
  }
  tags = var.tags
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowApiGateway"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.http.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.ca.execution_arn}/*/*"
}

# Enrolment: devices have no certificate yet; the one-time token authenticates them.
resource "aws_apigatewayv2_domain_name" "bootstrap" {
  domain_name = var.bootstrap_domain
  domain_name_configuration {
    certificate_arn = var.certificate_arn
    endpoint_type   = "REGIONAL"
    security_policy = "TLS_1_2"
  }
  tags = var.tags
}

# Renewal: API Gateway verifies the device certificate (or a factory certificate, at a
# first enrolment) against mtls-truststore.pem (the CA's bundle and the factory CAs) and
# hands it to the Lambda in the request context. API Gateway reads the trust store when the
# domain is created, and the bundle exists only once `lanyard-ca init --backend aws` has
# published it: so the domain is made by the second apply, the one that sets
# truststore_version (the first apply makes everything else, init runs in between).
resource "aws_apigatewayv2_domain_name" "renewal" {
  count       = var.truststore_version == null ? 0 : 1
  domain_name = var.renewal_domain
  domain_name_configuration {
    certificate_arn = var.certificate_arn
    endpoint_type   = "REGIONAL"
    security_policy = "TLS_1_2"
  }
  mutual_tls_authentication {
    truststore_uri     = "s3://${aws_s3_bucket.publications.bucket}/mtls-truststore.pem"
    truststore_version = var.truststore_version
  }
  tags = var.tags
}

resource "aws_apigatewayv2_api_mapping" "bootstrap" {
  api_id      = aws_apigatewayv2_api.ca.id
  domain_name = aws_apigatewayv2_domain_name.bootstrap.id
  stage       = aws_apigatewayv2_stage.ca.id
}

resource "aws_apigatewayv2_api_mapping" "renewal" {
  count       = var.truststore_version == null ? 0 : 1
  api_id      = aws_apigatewayv2_api.ca.id
  domain_name = aws_apigatewayv2_domain_name.renewal[0].id
  stage       = aws_apigatewayv2_stage.ca.id
}

# ---- alarms ------------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "lambda" {
  for_each = {
    for pair in setproduct(keys(local.functions), ["Errors", "Throttles"]) : "${pair[0]}-${pair[1]}" => {
      function = local.functions[pair[0]]
      metric   = pair[1]
    }
  }
  alarm_name          = "${each.value.function}-${lower(each.value.metric)}"
  alarm_description   = "${each.value.metric} in ${each.value.function}: devices may fail to enrol or renew (throttles: KMS or concurrency limits)."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = each.value.function }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
  ok_actions          = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
  tags                = var.tags
}
