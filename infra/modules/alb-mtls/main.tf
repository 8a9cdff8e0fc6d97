# An Application Load Balancer listener with mutual TLS in verify mode, trusting the Lanyard
# CA through its S3 feed: the trust store reads ca-bundle.pem, and the CA's CRLs (issuing,
# root) are the trust store's revocation list. The ALB refuses a revoked certificate at the
# handshake once the CRL with its serial is published and applied.

locals {
  prefix = var.feed.prefix == "" ? "" : "${trimsuffix(var.feed.prefix, "/")}/"
  crls = {
    issuing = { key = "${local.prefix}crl/issuing.crl", version = var.feed.issuing_crl_version }
    root    = { key = "${local.prefix}crl/root.crl", version = var.feed.root_crl_version }
  }
}

resource "aws_lb_trust_store" "this" {
  name                                     = var.name
  ca_certificates_bundle_s3_bucket         = var.feed.bucket
  ca_certificates_bundle_s3_key            = "${local.prefix}ca-bundle.pem"
  ca_certificates_bundle_s3_object_version = var.feed.bundle_version
  tags                                     = var.tags
}

# One revocation entry per CRL (the ALB takes DER or PEM CRLs from S3). An entry is a
# snapshot: a new object version replaces it.
resource "aws_lb_trust_store_revocation" "crl" {
  for_each                      = local.crls
  trust_store_arn               = aws_lb_trust_store.this.arn
  revocations_s3_bucket         = var.feed.bucket
  revocations_s3_key            = each.value.key
  revocations_s3_object_version = each.value.version
}

resource "aws_lb_listener" "mtls" {
  load_balancer_arn = var.load_balancer_arn
  port              = var.port
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = var.target_group_arn
  }

  mutual_authentication {
    mode                             = "verify"
    trust_store_arn                  = aws_lb_trust_store.this.arn
    ignore_client_certificate_expiry = false
    advertise_trust_store_ca_names   = var.advertise_trust_store_ca_names ? "on" : "off"
  }

  tags       = var.tags
  depends_on = [aws_lb_trust_store_revocation.crl]
}
