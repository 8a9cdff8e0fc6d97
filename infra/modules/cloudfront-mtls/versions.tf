terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.28, < 7.0" # trust stores, connection functions, viewer_mtls_config
      # aws: us-east-1 (CloudFront's ACM certificate lives there).
      # aws.bundle: the region of the CA bundle bucket (us-east-1 unless you choose).
      configuration_aliases = [aws.bundle]
    }
  }
}
