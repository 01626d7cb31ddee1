# Keyward in the management account: the role it runs as (deploy/iam/keyward-management-policy.json),
# the KMS key of its vault, the log group of its audit trail, the topic of its notices and alarms,
# and CloudWatch alarms on failed, blocked and overdue rotations, stuck notifications and a Keyward
# that stopped reporting. Apply ../member in every account with keyward_role_arn.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_iam_role" "keyward" {
  name_prefix = "keyward-"
  description = "The identity Keyward runs as."
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = var.runtime_service }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "keyward" {
  name = "keyward-management"
  role = aws_iam_role.keyward.id
  policy = templatefile("${path.module}/../../iam/keyward-management-policy.json", {
    ManagementAccountId = data.aws_caller_identity.current.account_id
    MemberRoleName      = var.member_role_name
    VaultKeyArn         = aws_kms_key.vault.arn
    AuditLogGroup       = var.audit_log_group
    MetricsNamespace    = var.metrics_namespace
    NotifyTopicPrefix   = "keyward-"
    DeliveryPrefix      = var.delivery_prefix
  })
}

resource "aws_kms_key" "vault" {
  description         = "Wraps the data keys of Keyward's vault (vault.master_key.kms_key_id). Losing it loses every secret in the vault."
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "TheAccountAdministersTheKey"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "KeywardUsesTheKey"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.keyward.arn }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource  = "*"
      },
    ]
  })
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_kms_alias" "vault" {
  name          = "alias/keyward-vault"
  target_key_id = aws_kms_key.vault.key_id
}

resource "aws_cloudwatch_log_group" "audit" {
  name              = var.audit_log_group
  retention_in_days = var.audit_log_retention_days
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_sns_topic" "notices" {
  name              = "keyward-notices"
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.notices.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  # name => metric, statistic, hours evaluated, comparison, missing data, description
  alarms = {
    "keyward-rotations-failed"    = ["RotationsFailed", "Sum", 1, "GreaterThanOrEqualToThreshold", "notBreaching", "A rotation failed in the last hour (keyward status, and the rotation.failed records, say why)."]
    "keyward-rotations-blocked"   = ["RotationsBlocked", "Maximum", 1, "GreaterThanOrEqualToThreshold", "notBreaching", "A user's rotation is blocked (two active keys Keyward cannot account for, or a key it may not touch)."]
    "keyward-keys-overdue"        = ["OverdueAccessKeys", "Maximum", 6, "GreaterThanOrEqualToThreshold", "notBreaching", "A current key is older than the policy allows, for six hours."]
    "keyward-notifications-stuck" = ["NotificationsPending", "Minimum", 3, "GreaterThanOrEqualToThreshold", "notBreaching", "Notices have waited in the outbox for three hours (a channel down or misconfigured)."]
    "keyward-silent"              = ["SchedulerProgress", "SampleCount", 3, "LessThanThreshold", "breaching", "The rotation scheduler has made no progress for three hours: no pass started, no user visited, no pass finished (Keyward down, no replica leading, a call hanging, or its database away). A long pass keeps its heartbeat coming."]
  }
}

resource "aws_cloudwatch_metric_alarm" "keyward" {
  for_each            = local.alarms
  alarm_name          = each.key
  alarm_description   = each.value[5]
  namespace           = var.metrics_namespace
  metric_name         = each.value[0]
  statistic           = each.value[1]
  period              = 3600
  evaluation_periods  = each.value[2]
  threshold           = 1
  comparison_operator = each.value[3]
  treat_missing_data  = each.value[4]
  alarm_actions       = [aws_sns_topic.notices.arn]
}
