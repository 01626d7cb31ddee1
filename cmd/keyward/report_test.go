package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/testenv"
)

// TestInventoryReportRemediateAgainstMoto: the binary against moto (signatures checked) over two
// accounts (the second through an assumed role): the inventory lists managed, exempt and unmanaged
// users from the credential reports; the compliance report names them in HTML; remediation off a
// terminal is a dry run unless told otherwise.
func TestInventoryReportRemediateAgainstMoto(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		ctx := context.Background()
		const other = "111111111111"
		admin := testenv.MotoWithAdmin(t, 3, func(anon aws.Config) {
			role, err := sts.NewFromConfig(anon).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::" + other + ":role/keyward"), RoleSessionName: aws.String("setup")})
			if err != nil {
				t.Fatal(err)
			}
			c := role.Credentials
			cfg := anon.Copy()
			cfg.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
			otherIAM := iam.NewFromConfig(cfg)
			if _, err := otherIAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("keyward"),
				AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}`)}); err != nil {
				t.Fatal(err)
			}
			if _, err := otherIAM.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("keyward"), PolicyName: aws.String("all"),
				PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)}); err != nil {
				t.Fatal(err)
			}
		})
		creds, _ := admin.Credentials.Retrieve(ctx)
		e := newEnv(t, db).with("AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
			"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL="+*admin.BaseEndpoint, "KEYWARD_AWS_MAX_RPS=100",
			`KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}, {id: "`+other+`", role_arn: "arn:aws:iam::`+other+`:role/keyward"}]`)
		mainIAM := iam.NewFromConfig(admin)
		for _, u := range []struct {
			name string
			tags []iamtypes.Tag
		}{{"app", nil}, {"vendor", []iamtypes.Tag{{Key: aws.String("keyward:exempt"), Value: aws.String("true")}}}} {
			if _, err := mainIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(u.name), Tags: u.tags}); err != nil {
				t.Fatal(err)
			}
			if _, err := mainIAM.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(u.name)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := mainIAM.CreateLoginProfile(ctx, &iam.CreateLoginProfileInput{UserName: aws.String("vendor"), Password: aws.String("Passw0rd!Passw0rd")}); err != nil {
			t.Fatal(err)
		}
		// Through the role, the assuming account's view: the admin's credentials make the calls.
		roleCfg := admin.Copy()
		roleCfg.Credentials = aws.NewCredentialsCache(stsAssume(admin, "arn:aws:iam::"+other+":role/keyward"))
		otherIAM := iam.NewFromConfig(roleCfg)
		if _, err := otherIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("remote")}); err != nil {
			t.Fatal(err)
		}
		if _, err := otherIAM.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("remote")}); err != nil {
			t.Fatal(err)
		}
		e.must(t, 0, "", "rotate", "--once", "--user", "app", "--force")

		r := e.must(t, 0, "", "inventory", "--output", "json")
		var inv struct {
			Accounts []struct {
				ID, Source string
				Users      []struct {
					Name     string
					ExemptBy string `json:"exempt_by"`
					Console  bool
					Keys     []struct{ Managed bool }
				}
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &inv); err != nil || len(inv.Accounts) != 2 {
			t.Fatalf("inventory: %v %s", err, r.stdout)
		}
		seen := map[string]bool{}
		for _, a := range inv.Accounts {
			if a.Source != "credential_report" {
				t.Errorf("account %s read from %s", a.ID, a.Source)
			}
			for _, u := range a.Users {
				seen[a.ID+"/"+u.Name] = true
				switch u.Name {
				case "app":
					if len(u.Keys) != 2 || !u.Keys[0].Managed || !u.Keys[1].Managed {
						t.Errorf("app: %+v", u)
					}
				case "vendor":
					if u.ExemptBy != "tag keyward:exempt" || !u.Console || u.Keys[0].Managed {
						t.Errorf("vendor: %+v", u)
					}
				}
			}
		}
		if !seen["123456789012/app"] || !seen["123456789012/vendor"] || !seen[other+"/remote"] {
			t.Fatalf("users seen: %v", seen)
		}

		html := filepath.Join(t.TempDir(), "report.html")
		e.must(t, 0, "", "report", "compliance", "--format", "html", "--output", html)
		page, err := os.ReadFile(html)
		if err != nil || !strings.Contains(string(page), "<svg") || !strings.Contains(string(page), "Console user without MFA") ||
			!strings.Contains(string(page), "vendor") || !strings.Contains(string(page), "remote") {
			t.Fatalf("HTML report: %v", err)
		}
		r = e.must(t, 0, "", "report", "compliance", "--format", "csv", "--account", other)
		if !strings.Contains(r.stdout, "keyward-unowned") || strings.Contains(r.stdout, "vendor") {
			t.Fatalf("CSV report of the other account: %s", r.stdout)
		}

		// Nothing is 45 days old here: remediation finds nothing, off a terminal as a dry run.
		r = e.must(t, 0, "", "remediate", "unused", "--older-than", "45d", "--output", "json")
		if !strings.Contains(r.stdout, `"dry_run":true`) || !strings.Contains(r.stdout, `"keys":[]`) {
			t.Fatalf("remediate: %s", r.stdout)
		}
		e.must(t, 2, "", "remediate", "unused", "--older-than", "2h")
		e.must(t, 2, "", "report", "compliance", "--format", "pdf")
		e.must(t, 2, "", "inventory", "--account", "12")
	})
}

// stsAssume is a credentials provider that assumes a role with cfg's credentials (and an external id).
func stsAssume(cfg aws.Config, roleARN string, externalID ...string) aws.CredentialsProviderFunc {
	return func(ctx context.Context) (aws.Credentials, error) {
		in := &sts.AssumeRoleInput{RoleArn: aws.String(roleARN), RoleSessionName: aws.String("test")}
		if len(externalID) > 0 {
			in.ExternalId = aws.String(externalID[0])
		}
		out, err := sts.NewFromConfig(cfg).AssumeRole(ctx, in)
		if err != nil {
			return aws.Credentials{}, err
		}
		c := out.Credentials
		return aws.Credentials{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
			SessionToken: aws.ToString(c.SessionToken), CanExpire: true, Expires: aws.ToTime(c.Expiration)}, nil
	}
}
