# Keyward's role in one member account: Keyward, in the management account, assumes it (with the
# external id) to list IAM users and rotate their access keys. Apply it in every account of the
# organization, the management account included (one provider per account).

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "keyward_principal_arn" {
  description = "The role (or user) Keyward runs as in the management account (the management module's keyward_role_arn)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+", var.keyward_principal_arn))
    error_message = "keyward_principal_arn must be an IAM role or user ARN."
  }
}

variable "external_id" {
  description = "The external id Keyward sends when it assumes the role (aws.organization.external_id)."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.external_id) >= 16
    error_message = "external_id must be at least 16 characters."
  }
}

variable "role_name" {
  description = "The role's name, the same in every account (aws.organization.role_name)."
  type        = string
  default     = "keyward"
}

variable "user_path" {
  description = "Keyward may rotate the keys of IAM users under this path only (\"/\" for all)."
  type        = string
  default     = "/"
  validation {
    condition     = can(regex("^/([!-~]+/)?$", var.user_path))
    error_message = "user_path must start and end with a slash."
  }
}

resource "aws_iam_role" "keyward" {
  name                 = var.role_name
  description          = "Keyward rotates the IAM users' access keys of this account."
  max_session_duration = 3600
  assume_role_policy = templatefile("${path.module}/../../iam/keyward-member-trust-policy.json", {
    KeywardPrincipalArn = var.keyward_principal_arn
    ExternalId          = var.external_id
  })
}

resource "aws_iam_role_policy" "keyward" {
  name   = "keyward-member"
  role   = aws_iam_role.keyward.id
  policy = templatefile("${path.module}/../../iam/keyward-member-policy.json", { UserPath = var.user_path })
}

output "role_arn" {
  description = "The role Keyward assumes in this account."
  value       = aws_iam_role.keyward.arn
}

output "user_path" {
  description = "The IAM path the role's policy is scoped to: set aws.user_path (or this account's aws.accounts[].user_path) to it."
  value       = var.user_path
}
