// Package inventory reads every IAM user of every configured account — managed by Keyward or not —
// with its access keys (id, status, age, last use), console access and MFA, and says for each user
// whether Keyward's policy covers it, who exempted it, and which team owns it. At scale it reads each
// account's IAM credential report (one call for every user's passwords, MFA and keys' last use) and
// falls back to per-user calls where the report cannot be had; key ids always come from
// ListAccessKeys (the report does not hold them). What it reads is stored with the time it was read.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

// Key is one access key of a user.
type Key struct {
	AccessKeyID     string    `json:"access_key_id"`
	Status          string    `json:"status"` // Active or Inactive
	CreatedAt       time.Time `json:"created_at"`
	LastUsed        time.Time `json:"last_used,omitzero"` // zero: never used
	LastUsedService string    `json:"last_used_service,omitempty"`
	LastUsedRegion  string    `json:"last_used_region,omitempty"`
	Managed         bool      `json:"managed"`               // the vault holds it
	VaultState      string    `json:"vault_state,omitempty"` // current, previous, inactive, pending
}

// User is one IAM user (or, with Root, the account's root user as the credential report shows it).
type User struct {
	AccountID        string            `json:"account_id"`
	Name             string            `json:"name"`
	ARN              string            `json:"arn,omitempty"`
	Path             string            `json:"path,omitempty"`
	Tags             map[string]string `json:"tags,omitempty"`
	CreatedAt        time.Time         `json:"created_at,omitzero"`
	Root             bool              `json:"root,omitempty"`
	Console          bool              `json:"console"` // a console password (login profile)
	PasswordLastUsed time.Time         `json:"password_last_used,omitzero"`
	MFA              bool              `json:"mfa"`
	Keys             []Key             `json:"keys"`
	// ExemptBy says who exempted the user from rotation (tag, group, rule); "" when it is not.
	ExemptBy string   `json:"exempt_by,omitempty"`
	Teams    []string `json:"teams,omitempty"`
	Owners   string   `json:"owners,omitempty"` // the keyward:owner tag
	// RootKeys counts the root user's active access keys (Root only).
	RootKeys int `json:"root_keys,omitempty"`
	// Denied names the action Keyward was refused reading this user: it is outside Keyward's
	// permissions (a policy scoped to an IAM path), and what else is known of it is partial.
	Denied string `json:"outside_permissions,omitempty"`
}

// Account is what was read of one account, and when.
type Account struct {
	ID     string    `json:"id"`
	ReadAt time.Time `json:"read_at"`
	// Source is credential_report, or api when the report could not be had (per-user calls).
	Source            string    `json:"source"`
	ReportGeneratedAt time.Time `json:"report_generated_at,omitzero"`
	Users             []User    `json:"users"`
}

// Store keeps the last read of each account.
type Store interface {
	SaveAccount(ctx context.Context, a Account) error
	Accounts(ctx context.Context) ([]Account, error)
}

// Reader reads the inventory.
type Reader struct {
	Cloud cloud.Provider
	// Reports gives credential reports and per-user console and MFA answers (nil: per-user key
	// calls only, console and MFA unknown).
	Reports cloud.Inventory
	Policy  rotation.Policy
	Vault   *vault.Vault
	// TeamsOf names the teams that own each identity.
	TeamsOf func(ctx context.Context) (map[vault.Identity][]string, error)
	Now     func() time.Time
}

// Read reads every account (or only accountID), calling progress after each user.
func (r *Reader) Read(ctx context.Context, accountID string, progress func(done, known int)) ([]Account, error) {
	accounts, err := r.Cloud.Accounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	versions, err := r.Vault.List(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]vault.Version{}
	for _, v := range versions {
		if v.State != vault.StateDestroyed {
			held[v.AccessKeyID] = v
		}
	}
	teams := map[vault.Identity][]string{}
	if r.TeamsOf != nil {
		if teams, err = r.TeamsOf(ctx); err != nil {
			return nil, err
		}
	}
	var out []Account
	done := 0
	for _, a := range accounts {
		if accountID != "" && a.ID != accountID {
			continue
		}
		acc, err := r.account(ctx, a.ID, held, teams, func() {
			done++
			if progress != nil {
				progress(done, done)
			}
		})
		if err != nil {
			return out, err
		}
		out = append(out, acc)
	}
	return out, nil
}

func (r *Reader) now() time.Time {
	if r.Now == nil {
		return time.Now().UTC()
	}
	return r.Now().UTC()
}

// account reads one account: its credential report if it can be had, its users, their keys.
func (r *Reader) account(ctx context.Context, id string, held map[string]vault.Version, teams map[vault.Identity][]string, tick func()) (Account, error) {
	acc := Account{ID: id, ReadAt: r.now(), Source: "api"}
	report := map[string]cloud.ReportRow{}
	if r.Reports != nil {
		rows, generated, err := r.Reports.CredentialReport(ctx, id)
		switch {
		case err == nil:
			acc.Source, acc.ReportGeneratedAt = "credential_report", generated
			for _, row := range rows {
				report[row.User] = row
			}
		case !errors.Is(err, cloud.ErrReportUnavailable):
			return acc, err
		}
		if root, ok := report[cloud.RootUser]; ok {
			u := User{AccountID: id, Name: cloud.RootUser, ARN: root.ARN, Root: true, Console: root.PasswordEnabled,
				PasswordLastUsed: root.PasswordLastUsed, MFA: root.MFAActive, Keys: []Key{}}
			for _, k := range root.Keys {
				if k.Active {
					u.RootKeys++
				}
			}
			acc.Users = append(acc.Users, u)
		}
	}
	err := r.Cloud.ListUsers(ctx, id, func(cu cloud.User) error {
		u, err := r.user(ctx, cu, report, held, teams)
		if action, denied := cloud.DeniedAction(err); denied {
			u.Denied, err = action, nil // reported, and the account's reading goes on
		}
		if err != nil {
			return err
		}
		acc.Users = append(acc.Users, u)
		tick()
		return nil
	})
	return acc, err
}

// user reads one user's keys, console access and MFA, and what Keyward's policy says of it.
func (r *Reader) user(ctx context.Context, cu cloud.User, report map[string]cloud.ReportRow, held map[string]vault.Version,
	teams map[vault.Identity][]string) (User, error) {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: cu.AccountID, UserName: cu.Name}
	u := User{AccountID: cu.AccountID, Name: cu.Name, ARN: cu.ARN, Path: cu.Path, Tags: cu.Tags, Teams: teams[id],
		Owners: cu.Tags[rotation.TagOwner], Keys: []Key{}, Denied: cu.Denied}
	if cu.Denied != "" {
		return u, nil
	}
	var groups []string
	if r.Policy.ExemptGroup != "" {
		g, err := r.Cloud.UserGroups(ctx, cu.AccountID, cu.Name)
		if err != nil {
			return u, err
		}
		groups = g
	}
	u.ExemptBy = r.Policy.ExemptBy(cu, groups)
	keys, err := r.Cloud.ListAccessKeys(ctx, cu.AccountID, cu.Name)
	if err != nil {
		return u, err
	}
	row, inReport := report[cu.Name]
	if inReport {
		u.CreatedAt, u.Console, u.PasswordLastUsed, u.MFA = row.UserCreated, row.PasswordEnabled, row.PasswordLastUsed, row.MFAActive
	} else if r.Reports != nil {
		if u.Console, err = r.Reports.LoginProfile(ctx, cu.AccountID, cu.Name); err != nil {
			return u, err
		}
		n, err := r.Reports.MFADevices(ctx, cu.AccountID, cu.Name)
		if err != nil {
			return u, err
		}
		u.MFA = n > 0
	}
	for _, k := range keys {
		key := Key{AccessKeyID: k.ID, Status: string(k.Status), CreatedAt: k.CreatedAt}
		if v, ok := held[k.ID]; ok {
			key.Managed, key.VaultState = true, string(v.State)
		}
		if slot, ok := reportSlot(row, k); inReport && ok {
			key.LastUsed, key.LastUsedService, key.LastUsedRegion = slot.LastUsed, slot.LastUsedService, slot.LastUsedRegion
		} else {
			lu, err := r.Cloud.AccessKeyLastUsed(ctx, cu.AccountID, k.ID)
			if err != nil {
				return u, err
			}
			key.LastUsed, key.LastUsedService, key.LastUsedRegion = lu.At, lu.Service, lu.Region
		}
		u.Keys = append(u.Keys, key)
	}
	return u, nil
}

// reportSlot finds a key's slot in its user's report row: the one made at the same second.
func reportSlot(row cloud.ReportRow, k cloud.AccessKey) (cloud.ReportKey, bool) {
	for _, slot := range row.Keys {
		if !slot.LastRotated.IsZero() && slot.LastRotated.Truncate(time.Second).Equal(k.CreatedAt.Truncate(time.Second)) {
			return slot, true
		}
	}
	return cloud.ReportKey{}, false
}
