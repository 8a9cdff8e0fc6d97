output "trust_store_arn" {
  description = "The ALB trust store reading the Lanyard CA bundle."
  value       = aws_lb_trust_store.this.arn
}

output "listener_arn" {
  description = "The mTLS listener."
  value       = aws_lb_listener.mtls.arn
}
