output "keyward_role_arn" {
  description = "The role Keyward runs as; the member modules trust it (keyward_principal_arn)."
  value       = aws_iam_role.keyward.arn
}

output "vault_key_arn" {
  description = "vault.master_key.kms_key_id"
  value       = aws_kms_key.vault.arn
}

output "notices_topic_arn" {
  description = "notify.sns[].topic_arn"
  value       = aws_sns_topic.notices.arn
}

output "audit_log_group" {
  description = "audit.cloudwatch.log_group"
  value       = aws_cloudwatch_log_group.audit.name
}
