package awsiam

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/keyward/keyward/internal/cloud"
)

var _ cloud.Inventory = (*Provider)(nil)

// reportWait is how long CredentialReport waits for AWS to finish a report.
const reportWait = 30 * time.Second

// CredentialReport implements cloud.Inventory: GenerateCredentialReport until it is complete, then
// GetCredentialReport, parsed.
func (p *Provider) CredentialReport(ctx context.Context, accountID string) ([]cloud.ReportRow, time.Time, error) {
	c := p.client(accountID)
	deadline := time.Now().Add(reportWait)
	for {
		out, err := c.GenerateCredentialReport(ctx, &iam.GenerateCredentialReportInput{})
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("%w: generate the report of %s: %v", cloud.ErrReportUnavailable, accountID, err)
		}
		if out.State == iamtypes.ReportStateTypeComplete {
			break
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, fmt.Errorf("%w: the report of %s was not ready within %s", cloud.ErrReportUnavailable, accountID, reportWait)
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	out, err := c.GetCredentialReport(ctx, &iam.GetCredentialReportInput{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: read the report of %s: %v", cloud.ErrReportUnavailable, accountID, err)
	}
	rows, err := ParseCredentialReport(out.Content)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: the report of %s: %v", cloud.ErrReportUnavailable, accountID, err)
	}
	return rows, aws.ToTime(out.GeneratedTime).UTC(), nil
}

// ParseCredentialReport reads IAM's credential report (CSV, its columns by name).
func ParseCredentialReport(content []byte) ([]cloud.ReportRow, error) {
	records, err := csv.NewReader(bytes.NewReader(content)).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(records) == 0 {
		return nil, errors.New("empty")
	}
	col := map[string]int{}
	for i, name := range records[0] {
		col[name] = i
	}
	for _, need := range []string{"user", "arn", "password_enabled", "mfa_active", "access_key_1_active", "access_key_2_active"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("no column %s", need)
		}
	}
	get := func(r []string, name string) string {
		if i, ok := col[name]; ok && i < len(r) {
			return r[i]
		}
		return ""
	}
	when := func(r []string, name string) time.Time {
		t, err := time.Parse(time.RFC3339, get(r, name))
		if err != nil {
			return time.Time{} // N/A, no_information, not_supported
		}
		return t.UTC()
	}
	var rows []cloud.ReportRow
	for _, r := range records[1:] {
		row := cloud.ReportRow{User: get(r, "user"), ARN: get(r, "arn"), UserCreated: when(r, "user_creation_time"),
			PasswordEnabled: get(r, "password_enabled") == "true", PasswordLastUsed: when(r, "password_last_used"),
			MFAActive: get(r, "mfa_active") == "true"}
		for i := range 2 {
			k := fmt.Sprintf("access_key_%d_", i+1)
			row.Keys[i] = cloud.ReportKey{Active: get(r, k+"active") == "true", LastRotated: when(r, k+"last_rotated"),
				LastUsed: when(r, k+"last_used_date"), LastUsedService: usable(get(r, k+"last_used_service")), LastUsedRegion: usable(get(r, k+"last_used_region"))}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func usable(s string) string {
	if s == "N/A" || s == "not_supported" || s == "no_information" {
		return ""
	}
	return s
}

// LoginProfile implements cloud.Inventory.
func (p *Provider) LoginProfile(ctx context.Context, accountID, userName string) (bool, error) {
	_, err := p.client(accountID).GetLoginProfile(ctx, &iam.GetLoginProfileInput{UserName: aws.String(userName)})
	if err == nil {
		return true, nil
	}
	if err := p.wrap("login profile of "+userName, err); errors.Is(err, cloud.ErrNoSuchEntity) {
		return false, nil
	} else {
		return false, err
	}
}

// MFADevices implements cloud.Inventory.
func (p *Provider) MFADevices(ctx context.Context, accountID, userName string) (int, error) {
	n := 0
	pages := iam.NewListMFADevicesPaginator(p.client(accountID), &iam.ListMFADevicesInput{UserName: aws.String(userName)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return 0, p.wrap("MFA devices of "+userName, err)
		}
		n += len(page.MFADevices)
	}
	return n, nil
}
