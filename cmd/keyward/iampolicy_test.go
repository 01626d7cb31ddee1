package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ses"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"

	"github.com/keyward/keyward/internal/metrics/awsmetrics"
	"github.com/keyward/keyward/internal/testenv"
)

// policyStatement is one statement of an IAM policy document.
type policyStatement struct {
	Sid       string
	Effect    string
	Action    any
	Resource  any            `json:",omitempty"`
	Principal any            `json:",omitempty"`
	Condition map[string]any `json:",omitempty"`
}

type policyDocument struct {
	Version   string
	Statement []policyStatement
}

// samplePolicyVars fill every placeholder of deploy/iam's policies, for the tests that read them
// without an account behind them.
var samplePolicyVars = map[string]string{"UserPath": "/", "MemberRoleName": "keyward", "VaultKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k",
	"ManagementAccountId": "123456789012", "AuditLogGroup": "keyward-audit", "MetricsNamespace": "Keyward",
	"NotifyTopicPrefix": "keyward-", "DeliveryPrefix": "keyward/", "KeywardPrincipalArn": "arn:aws:iam::123456789012:role/keyward", "ExternalId": "x"}

// deployPolicy reads a policy of deploy/iam with its ${…} placeholders filled in.
func deployPolicy(t *testing.T, name string, vars map[string]string) policyDocument {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "iam", name))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for k, v := range vars {
		text = strings.ReplaceAll(text, "${"+k+"}", v)
	}
	if i := strings.Index(text, "${"); i >= 0 {
		t.Fatalf("%s: placeholder left unfilled at %q", name, text[i:min(len(text), i+30)])
	}
	var doc policyDocument
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

func actions(s policyStatement) []string {
	switch a := s.Action.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			out = append(out, v.(string))
		}
		return out
	case []string:
		return a
	}
	return nil
}

// forMoto is the policy as moto can evaluate it: moto checks a request's action against the
// statements, but holds every request's resource to be "*" and has no request context for
// conditions (a statement with one would deny). So resources become "*" and conditions go: what
// moto proves is that these actions, and no others, are enough; the resources and conditions are
// checked by TestDeployPoliciesAreScoped.
func forMoto(doc policyDocument) string {
	for i := range doc.Statement {
		doc.Statement[i].Resource, doc.Statement[i].Condition = "*", nil
		// moto names CloudWatch's actions after its endpoint, "monitoring".
		acts := actions(doc.Statement[i])
		for _, a := range acts {
			if rest, ok := strings.CutPrefix(a, "cloudwatch:"); ok {
				acts = append(acts, "monitoring:"+rest)
			}
		}
		doc.Statement[i].Action = acts
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

// TestDeployPoliciesAreScoped: every statement of deploy/iam's policies names its resources, but
// for the actions IAM cannot scope (listing users, credential reports, the organization's accounts)
// and those held by a condition instead (CloudWatch metrics by namespace, KMS through the delivery
// services); none allows a wildcard action; the trust policy requires an external id.
func TestDeployPoliciesAreScoped(t *testing.T) {
	vars := samplePolicyVars
	unscoped := []string{"iam:ListUsers", "iam:GenerateCredentialReport", "iam:GetCredentialReport", "organizations:ListAccounts"}
	for _, name := range []string{"keyward-management-policy.json", "keyward-member-policy.json"} {
		for _, s := range deployPolicy(t, name, vars).Statement {
			for _, a := range actions(s) {
				if strings.Contains(a, "*") {
					t.Errorf("%s %s: a wildcard action %s", name, s.Sid, a)
				}
				if s.Resource == "*" && s.Condition == nil && !slices.Contains(unscoped, a) {
					t.Errorf("%s %s: %s on every resource, without a condition", name, s.Sid, a)
				}
			}
		}
	}
	trust := deployPolicy(t, "keyward-member-trust-policy.json", vars)
	if c := trust.Statement[0].Condition["StringEquals"]; c == nil || c.(map[string]any)["sts:ExternalId"] != "x" {
		t.Fatalf("the member role's trust policy does not require the external id: %+v", trust.Statement[0])
	}
}

// TestLeastPrivilegeAgainstMoto runs Keyward against moto with exactly deploy/iam's policies (as
// forMoto renders them) instead of "*": a management user with the management policy, and in each
// account of an organization a member role with the member policy and its trust policy (external id
// required). Every AWS feature is used — discovering the organization, rotating in both accounts,
// the vault's KMS key, delivery to Secrets Manager and Parameter Store, the inventory and its
// credential reports, a leak answered, the audit trail to CloudWatch Logs, metrics to CloudWatch,
// notices through SNS and SES — and works; a call outside the policies is refused.
func TestLeastPrivilegeAgainstMoto(t *testing.T) {
	ctx := context.Background()
	const mgmt, externalID, namespace, logGroup = "123456789012", "keyward-external-id-for-the-test", "Keyward", "keyward-audit"
	// Before moto checks signatures: the organization (the management account and one member), and
	// in the member a role with "*" for the test's own hands there.
	var member string
	harness := testenv.MotoWithAdmin(t, 5, func(anon aws.Config) { // "*": the test's own hands, never Keyward's
		orgs := organizations.NewFromConfig(anon)
		_, err := orgs.CreateOrganization(ctx, &organizations.CreateOrganizationInput{})
		if err != nil {
			t.Fatal(err)
		}
		created, err := orgs.CreateAccount(ctx, &organizations.CreateAccountInput{AccountName: aws.String("member"), Email: aws.String("member@example.com")})
		if err != nil {
			t.Fatal(err)
		}
		member = aws.ToString(created.CreateAccountStatus.AccountId)
		role := anon.Copy()
		role.Credentials = aws.NewCredentialsCache(stsAssume(anon, "arn:aws:iam::"+member+":role/OrganizationAccountAccessRole"))
		c := iam.NewFromConfig(role)
		if _, err := c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("harness"),
			AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + mgmt + `:root"},"Action":"sts:AssumeRole"}]}`)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("harness"), PolicyName: aws.String("all"),
			PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)}); err != nil {
			t.Fatal(err)
		}
	})
	harnessIAM := iam.NewFromConfig(harness)
	mustAWS := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Keyward's user in the management account, with the management policy only.
	vaultKey, err := kms.NewFromConfig(harness).CreateKey(ctx, &kms.CreateKeyInput{})
	mustAWS("create kms key", err)
	vars := map[string]string{"UserPath": "/", "MemberRoleName": "keyward", "VaultKeyArn": aws.ToString(vaultKey.KeyMetadata.Arn),
		"ManagementAccountId": mgmt, "AuditLogGroup": logGroup, "MetricsNamespace": namespace, "NotifyTopicPrefix": "keyward-",
		"DeliveryPrefix": "keyward/", "KeywardPrincipalArn": "arn:aws:iam::" + mgmt + ":user/keyward", "ExternalId": externalID}
	_, err = harnessIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("keyward"),
		Tags: []iamtypes.Tag{{Key: aws.String("keyward:exempt"), Value: aws.String("true")}}})
	mustAWS("create keyward user", err)
	_, err = harnessIAM.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("keyward"), PolicyName: aws.String("keyward-management"),
		PolicyDocument: aws.String(forMoto(deployPolicy(t, "keyward-management-policy.json", vars)))})
	mustAWS("attach the management policy", err)
	key, err := harnessIAM.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("keyward")})
	mustAWS("keyward's key", err)
	keyward := harness.Copy()
	keyward.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(key.AccessKey.AccessKeyId), aws.ToString(key.AccessKey.SecretAccessKey), "")

	// In each account: the member role, and users to manage.
	trust := deployPolicy(t, "keyward-member-trust-policy.json", vars)
	trustJSON, _ := json.Marshal(trust)
	users := map[string][]string{mgmt: {"app-a"}, member: {"app-b", "app-c"}}
	accountIAM := map[string]*iam.Client{mgmt: harnessIAM}
	roleCfg := harness.Copy()
	roleCfg.Credentials = aws.NewCredentialsCache(stsAssume(harness, "arn:aws:iam::"+member+":role/harness"))
	accountIAM[member] = iam.NewFromConfig(roleCfg)
	for account, c := range accountIAM {
		_, err := c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("keyward"), AssumeRolePolicyDocument: aws.String(string(trustJSON))})
		mustAWS("create the member role in "+account, err)
		_, err = c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("keyward"), PolicyName: aws.String("keyward-member"),
			PolicyDocument: aws.String(forMoto(deployPolicy(t, "keyward-member-policy.json", vars)))})
		mustAWS("attach the member policy in "+account, err)
		for _, u := range users[account] {
			_, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(u)})
			mustAWS("create user "+u, err)
			_, err = c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(u)})
			mustAWS("create a key for "+u, err)
		}
	}
	// Where notices go: a topic read through a queue, and a verified sender for SES.
	topic, err := sns.NewFromConfig(harness).CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String("keyward-notices")})
	mustAWS("create topic", err)
	sq := sqs.NewFromConfig(harness)
	queue, err := sq.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("notices")})
	mustAWS("create queue", err)
	_, err = sns.NewFromConfig(harness).Subscribe(ctx, &sns.SubscribeInput{TopicArn: topic.TopicArn, Protocol: aws.String("sqs"),
		Endpoint: aws.String("arn:aws:sqs:us-east-1:" + mgmt + ":notices")})
	mustAWS("subscribe", err)
	_, err = ses.NewFromConfig(harness).VerifyEmailIdentity(ctx, &ses.VerifyEmailIdentityInput{EmailAddress: aws.String("keyward@example.com")})
	mustAWS("verify sender", err)

	creds, _ := keyward.Credentials.Retrieve(ctx)
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}).with(
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL="+*harness.BaseEndpoint, "KEYWARD_AWS_MAX_RPS=100",
		"KEYWARD_AWS_ORGANIZATION_ROLE_NAME=keyward", "KEYWARD_AWS_ORGANIZATION_EXTERNAL_ID="+externalID,
		"KEYWARD_ROTATION_VERIFY_INTERVAL=50ms",
		"KEYWARD_VAULT_MASTER_KEY_SOURCE=aws-kms", "KEYWARD_VAULT_MASTER_KEY_KMS_KEY_ID="+aws.ToString(vaultKey.KeyMetadata.Arn),
		`KEYWARD_DELIVERY_TARGETS=[{match: {user: "*"}, kind: secrets_manager, name: "keyward/{account}/{user}"}, `+
			`{match: {user: "*"}, kind: ssm_parameter, name: "/keyward/{account}/{user}"}]`,
		"KEYWARD_AUDIT_CLOUDWATCH_LOG_GROUP="+logGroup, "KEYWARD_METRICS_CLOUDWATCH_NAMESPACE="+namespace,
		"KEYWARD_NOTIFY_SNS=[{topic_arn: \""+aws.ToString(topic.TopicArn)+"\"}]",
		"KEYWARD_NOTIFY_EMAIL_VIA=ses", "KEYWARD_NOTIFY_EMAIL_FROM=keyward@example.com",
		`KEYWARD_NOTIFY_OWNERS=[{user_glob: "app-*", emails: ["owners@example.com"]}]`, "KEYWARD_NOTIFY_INTERVAL=200ms",
		"KEYWARD_AUDIT_SHIP_INTERVAL=200ms", "KEYWARD_ROTATION_INTERVAL=1s")

	// The organization discovered, every user rotated and delivered, through the member roles.
	r := e.must(t, 0, "", "rotate", "--once", "--force", "--user", "app-a", "--user", "app-b", "--user", "app-c", "--output", "json")
	for _, u := range []string{"app-a", "app-b", "app-c"} {
		if !strings.Contains(r.stdout, `"user_name":"`+u+`"`) || strings.Count(r.stdout, `"outcome":"rotated"`) != 3 {
			t.Fatalf("rotate with the least-privilege policies:\n%s", r.stdout)
		}
	}
	e.must(t, 0, "", "deliver", "--check")
	inv := e.must(t, 0, "", "inventory", "--refresh", "--output", "json")
	if !strings.Contains(inv.stdout, member) || !strings.Contains(inv.stdout, `"credential_report"`) {
		t.Fatalf("inventory with the least-privilege policies:\n%s", inv.stdout)
	}
	e.must(t, 0, "", "report", "compliance", "--format", "json")
	current := e.must(t, 0, "", "vault", "get", "app-c", "--account", member)
	var cred map[string]string
	if err := json.Unmarshal([]byte(current.stdout), &cred); err != nil {
		t.Fatal(err)
	}
	e.must(t, 0, "", "leak", cred["AccessKeyId"], "--reason", "found in a log")

	// serve: a pass, the trail to CloudWatch Logs, the metrics, the notices by SNS and SES.
	p := startServe(t, e.with("KEYWARD_CLOUD=aws"))
	logs := cloudwatchlogs.NewFromConfig(harness)
	cw := awsmetrics.Client(harness) // awsQuery: what moto reads
	var shipped, metrics, queued bool
	var sent float64
	for deadline := time.Now().Add(60 * time.Second); !(shipped && metrics && queued && sent > 0); time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: trail shipped %v, metrics %v, SNS notice %v, SES mails %v\n%s", shipped, metrics, queued, sent, p.logs.String())
		}
		if ev, err := logs.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(logGroup), LogStreamName: aws.String("keyward")}); err == nil {
			shipped = len(ev.Events) > 0
		}
		if m, err := cw.ListMetrics(ctx, &cloudwatch.ListMetricsInput{Namespace: aws.String(namespace)}); err == nil {
			metrics = len(m.Metrics) > 0
		}
		if msgs, err := sq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: queue.QueueUrl}); err == nil && len(msgs.Messages) > 0 {
			queued = true
		}
		if q, err := ses.NewFromConfig(harness).GetSendQuota(ctx, &ses.GetSendQuotaInput{}); err == nil {
			sent = q.SentLast24Hours
		}
	}

	// Outside the policies: refused.
	denied := func(what string, err error) {
		t.Helper()
		// moto's IAM and STS refusals are a 403 whose body the SDK does not decode (UnknownError); the
		// other services' say AccessDenied.
		var api smithy.APIError
		var resp *awshttp.ResponseError
		if !(errors.As(err, &api) && strings.Contains(api.ErrorCode(), "AccessDenied")) &&
			!(errors.As(err, &resp) && resp.HTTPStatusCode() == 403) {
			t.Fatalf("%s with Keyward's credentials: %v, want access denied", what, err)
		}
	}
	_, err = iam.NewFromConfig(keyward).CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("intruder")})
	denied("iam:CreateUser", err)
	_, err = iam.NewFromConfig(keyward).CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("app-a")})
	denied("iam:CreateAccessKey by the management user itself (only the member role may)", err)
	_, err = secretsmanager.NewFromConfig(keyward).DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String("keyward/" + mgmt + "/app-a")})
	denied("secretsmanager:DeleteSecret", err)
	_, err = kms.NewFromConfig(keyward).ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: vaultKey.KeyMetadata.KeyId})
	denied("kms:ScheduleKeyDeletion", err)
	roleCreds := aws.NewCredentialsCache(stsAssume(keyward, "arn:aws:iam::"+member+":role/keyward", externalID))
	memberRole := harness.Copy()
	memberRole.Credentials = roleCreds
	_, err = iam.NewFromConfig(memberRole).DeleteUser(ctx, &iam.DeleteUserInput{UserName: aws.String("app-b")})
	denied("iam:DeleteUser through the member role", err)
	// moto does not hold AssumeRole to the trust policy's external id condition (it passes a wrong
	// one): TestDeployPoliciesAreScoped checks that the trust policy requires it.
}
