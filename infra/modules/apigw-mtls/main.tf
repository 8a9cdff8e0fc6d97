# An API Gateway custom domain with mutual TLS, trusting the Lanyard CA through its S3
# feed. API Gateway reads no CRL: it checks the chain and expiry at the handshake and
# hands the certificate to the integration (HTTP APIs: requestContext.authentication
# .clientCert, with clientCertPem and serialNumber). Revocation is the backend's or an
# authorizer's to check: against the feed's revoked.json, or the CA's OCSP responder.

locals {
  prefix = var.feed.prefix == "" ? "" : "${trimsuffix(var.feed.prefix, "/")}/"
}

resource "aws_apigatewayv2_domain_name" "this" {
  domain_name = var.domain_name
  domain_name_configuration {
    certificate_arn = var.certificate_arn
    endpoint_type   = "REGIONAL"
    security_policy = "TLS_1_2"
  }
  mutual_tls_authentication {
    truststore_uri     = "s3://${var.feed.bucket}/${local.prefix}ca-bundle.pem"
    truststore_version = var.feed.bundle_version
  }
  tags = var.tags
}

resource "aws_apigatewayv2_api_mapping" "this" {
  api_id      = var.api_id
  domain_name = aws_apigatewayv2_domain_name.this.id
  stage       = var.stage
}
