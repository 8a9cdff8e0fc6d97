output "target_domain_name" {
  description = "Regional target for the domain's DNS alias."
  value       = aws_apigatewayv2_domain_name.this.domain_name_configuration[0].target_domain_name
}

output "hosted_zone_id" {
  description = "Hosted zone of the regional target (for a Route53 alias)."
  value       = aws_apigatewayv2_domain_name.this.domain_name_configuration[0].hosted_zone_id
}
