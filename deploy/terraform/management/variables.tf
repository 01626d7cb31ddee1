variable "runtime_service" {
  description = "The AWS service Keyward runs on, which assumes its role."
  type        = string
  default     = "ecs-tasks.amazonaws.com"
  validation {
    condition     = contains(["ecs-tasks.amazonaws.com", "ec2.amazonaws.com", "lambda.amazonaws.com"], var.runtime_service)
    error_message = "runtime_service must be ecs-tasks.amazonaws.com, ec2.amazonaws.com or lambda.amazonaws.com."
  }
}

variable "member_role_name" {
  description = "The member role's name in every account (aws.organization.role_name)."
  type        = string
  default     = "keyward"
}

variable "audit_log_group" {
  description = "The log group the audit trail is shipped to (audit.cloudwatch.log_group)."
  type        = string
  default     = "keyward-audit"
}

variable "audit_log_retention_days" {
  description = "How long CloudWatch Logs keeps the trail (the database keeps it for good)."
  type        = number
  default     = 400
}

variable "metrics_namespace" {
  description = "The CloudWatch namespace of Keyward's metrics (metrics.cloudwatch.namespace); not AWS/…."
  type        = string
  default     = "Keyward"
  validation {
    condition     = !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must not start with AWS/."
  }
}

variable "delivery_prefix" {
  description = "Keyward writes only secrets and parameters whose names start with this (delivery.targets[].name)."
  type        = string
  default     = "keyward/"
}

variable "alarm_email" {
  description = "An address subscribed to the alarms and notices topic (empty: none)."
  type        = string
  default     = ""
}
