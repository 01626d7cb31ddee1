package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/boombuler/barcode/qr"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// authConfig turns the configuration's auth section into the service's.
func authConfig(c config.Auth) auth.Config {
	cfg := auth.Config{
		Argon2: auth.Argon2Params{MemoryKiB: uint32(c.Argon2.MemoryKiB), Iterations: uint32(c.Argon2.Iterations),
			Parallelism: uint8(c.Argon2.Parallelism)},
		Issuer: c.Issuer, Audience: c.Audience, TokenTTL: c.TokenTTL.Std(), KeyRotation: c.SigningKeyRotation.Std(),
		Lockout: auth.Lockout{MaxFailures: int64(c.Lockout.MaxFailures), IPMaxFailures: int64(c.Lockout.IPMaxFailures),
			Duration: c.Lockout.Duration.Std(), Delay: c.Lockout.Delay.Std(), MaxDelay: c.Lockout.MaxDelay.Std()},
		MaxConcurrentHashes: c.MaxConcurrentHashes,
	}
	for _, r := range c.RequireMFA {
		cfg.RequireMFA = append(cfg.RequireMFA, auth.Role(r))
	}
	return cfg
}

// authService opens the auth service over an open vault. provider, when set, is the cloud whose
// accounts a team may name; nil: the configured cloud, made on first need.
func (a *app) authService(v *vault.Vault, db *store.DB, provider cloud.Provider) (*auth.Service, error) {
	cfg := authConfig(a.cfg.Auth)
	cfg.AccountManaged = a.accountManaged(provider)
	return auth.New(cfg, db.Auth(), v, a.trail(db), nil)
}

// accountManaged says whether Keyward manages an account: one of aws.accounts when they are listed,
// otherwise one the cloud lists (the organization's, or the ambient credentials' own).
func (a *app) accountManaged(provider cloud.Provider) func(ctx context.Context, id string) (bool, error) {
	return func(ctx context.Context, id string) (bool, error) {
		if len(a.cfg.AWS.Accounts) > 0 {
			return slices.ContainsFunc(a.cfg.AWS.Accounts, func(acct config.AWSAccount) bool { return acct.ID == id }), nil
		}
		p := provider
		if p == nil {
			var err error
			if p, err = a.provider(ctx); err != nil {
				return false, err
			}
		}
		accts, err := p.Accounts(ctx)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(accts, func(acct cloud.Account) bool { return acct.ID == id }), nil
	}
}

// withAuth loads the configuration, opens the vault (making it at first use) and the auth service,
// runs fn, and signs the audit trail's new end (fn changes who may do what).
func (a *app) withAuth(ctx context.Context, fn func(svc *auth.Service, v *vault.Vault, db *store.DB) error) error {
	return a.auth(ctx, dbCreate, fn)
}

// readAuth is withAuth for the commands that only read (the lists, demo totp): it never creates a
// vault, and there is no new end of the trail to sign.
func (a *app) readAuth(ctx context.Context, fn func(svc *auth.Service) error) error {
	return a.auth(ctx, dbExisting, func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error { return fn(svc) })
}

func (a *app) auth(ctx context.Context, mode dbMode, fn func(svc *auth.Service, v *vault.Vault, db *store.DB) error) error {
	v, db, err := a.loadAndOpenVault(ctx, mode)
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	svc, err := a.authService(v, db, nil)
	if err != nil {
		return err
	}
	if err := fn(svc, v, db); err != nil {
		return authErr(err)
	}
	if mode != dbExisting {
		a.checkpoint(ctx, a.auditSigner(v), db)
	}
	return nil
}

// authErr makes the service's errors about what the user typed usage errors (exit 2).
func authErr(err error) error {
	if errors.Is(err, auth.ErrExists) || errors.Is(err, auth.ErrNotFound) || errors.Is(err, auth.ErrInvalid) {
		return asUsage(err)
	}
	return err
}

func (a *app) userCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage the people who may use Keyward (works without the server, on the same database)"}
	cmd.AddCommand(a.userAddCommand(), a.userMFACommand(), a.userDisableCommand(), a.userListCommand())
	return cmd
}

func (a *app) userAddCommand() *cobra.Command {
	var role, output string
	var teams []string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "add NAME --role ROLE [--team TEAM]... --password-stdin",
		Short: "Add a local user with a password read from standard input",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateName("user", args[0]); err != nil {
				return usageErr("%v", err)
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return usageErr("--role: %v", err)
			}
			if !fromStdin {
				return usageErr("--password-stdin is required: Keyward never takes a password on the command line")
			}
			if err := textOrJSON(output); err != nil {
				return err
			}
			raw, err := io.ReadAll(io.LimitReader(a.stdin, 1025))
			if err != nil {
				return fmt.Errorf("read password from standard input: %w", err)
			}
			pw := secret.New(strings.TrimRight(string(raw), "\r\n"))
			if err := auth.CheckPassword(pw); err != nil {
				return usageErr("%v", err)
			}
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				u, err := svc.AddUser(cmd.Context(), cliActor(), args[0], r, teams, pw)
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(u)
				}
				_, err = fmt.Fprintf(a.stdout, "added user %s (%s; teams: %s)\n", u.Name, u.Role, listOrNone(u.Teams))
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, operator, auditor, member or reporter (reports leaked keys only)")
	cmd.Flags().StringArrayVar(&teams, "team", nil, "a team the user is a member of (repeatable)")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from standard input")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func listOrNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

func (a *app) userMFACommand() *cobra.Command {
	cmd := &cobra.Command{Use: "mfa", Short: "Second factors"}
	var output string
	var replace bool
	enroll := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Give a user a new TOTP seed: prints the otpauth:// URI (and a QR code on a terminal) for an authenticator app",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				if u, err := svc.User(cmd.Context(), args[0]); err == nil && u.MFAEnrolled && !replace {
					return usageErr("user %s already has an authenticator: give --replace to replace its seed (the codes of its current app stop working)", args[0])
				}
				uri, err := svc.EnrollMFA(cmd.Context(), cliActor(), args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(map[string]string{"user": args[0], "otpauth_uri": uri.Reveal()})
				}
				if isTerminal(a.stdout) {
					if err := printQR(a.stdout, uri.Reveal()); err != nil {
						return err
					}
				}
				_, err = fmt.Fprintf(a.stdout, "%s\nScan it (or enter the URI) in an authenticator app; from now on %s logs in with its code.\n",
					uri.Reveal(), args[0])
				return err
			})
		}),
	}
	enroll.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	enroll.Flags().BoolVar(&replace, "replace", false, "replace the seed of a user who already has an authenticator")
	cmd.AddCommand(enroll)
	return cmd
}

// printQR draws a QR code of s with Unicode half blocks, two modules per character cell, on a light
// quiet zone so that phones read it on dark terminals too.
func printQR(w io.Writer, s string) error {
	code, err := qr.Encode(s, qr.M, qr.Auto)
	if err != nil {
		return fmt.Errorf("QR code: %w", err)
	}
	size := code.Bounds().Dx()
	dark := func(x, y int) bool {
		if x < 0 || y < 0 || x >= size || y >= size {
			return false
		}
		r, _, _, _ := code.At(x, y).RGBA()
		return r == 0
	}
	var b strings.Builder
	for y := -2; y < size+2; y += 2 {
		for x := -2; x < size+2; x++ {
			top, bottom := dark(x, y), dark(x, y+1)
			switch {
			case top && bottom:
				b.WriteString(" ")
			case top:
				b.WriteString("▄")
			case bottom:
				b.WriteString("▀")
			default:
				b.WriteString("█")
			}
		}
		b.WriteString("\n")
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func (a *app) userDisableCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "disable NAME",
		Short: "Disable a user: its logins fail and its tokens stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				if err := svc.DisableUser(cmd.Context(), cliActor(), args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "disabled user %s\n", args[0])
				return err
			})
		}),
	}
}

func (a *app) userListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the users",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			return a.readAuth(cmd.Context(), func(svc *auth.Service) error {
				users, err := svc.Users(cmd.Context())
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(users)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tMFA\tDISABLED\tTEAMS")
				for _, u := range users {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", u.Name, u.Role, u.MFAEnrolled, !u.DisabledAt.IsZero(), listOrNone(u.Teams))
				}
				return tw.Flush()
			})
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (a *app) teamCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "team", Short: "Manage teams: each owns one IAM user, whose key its members share"}
	cmd.AddCommand(a.teamAddCommand(), a.teamAddMemberCommand(), a.teamListCommand())
	return cmd
}

// defaultAccount is the account a team's IAM user is in when --account is left out: the one account
// configured, or the one the cloud lists.
func (a *app) defaultAccount(ctx context.Context) (string, error) {
	if len(a.cfg.AWS.Accounts) == 1 {
		return a.cfg.AWS.Accounts[0].ID, nil
	}
	if len(a.cfg.AWS.Accounts) == 0 {
		p, err := a.provider(ctx)
		if err != nil {
			return "", err
		}
		accts, err := p.Accounts(ctx)
		if err != nil {
			return "", fmt.Errorf("--account left out, and the cloud's accounts could not be listed: %w", err)
		}
		switch len(accts) {
		case 1:
			return accts[0].ID, nil
		case 0:
			return "", usageErr("--account is required: the cloud lists no account Keyward manages")
		}
	}
	return "", usageErr("--account is required: Keyward manages more than one account")
}

func (a *app) teamAddCommand() *cobra.Command {
	var iamUser, account string
	var sessionOnly bool
	cmd := &cobra.Command{
		Use:   "add TEAM --iam-user USER [--account ID] [--session-only]",
		Short: "Add a team that owns an IAM user",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidateName("team", args[0]); err != nil {
				return usageErr("%v", err)
			}
			if iamUser == "" {
				return usageErr("--iam-user is required")
			}
			if err := vault.ValidateUserName(iamUser); err != nil {
				return usageErr("--iam-user: %v", err)
			}
			if err := accountFlag(account); err != nil {
				return err
			}
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				if account == "" {
					var err error
					if account, err = a.defaultAccount(cmd.Context()); err != nil {
						return err
					}
				}
				t, err := svc.AddTeam(cmd.Context(), cliActor(), auth.Team{Name: args[0],
					Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: iamUser}, SessionOnly: sessionOnly})
				if err != nil {
					return err
				}
				only := ""
				if t.SessionOnly {
					only = " (session credentials only)"
				}
				_, err = fmt.Fprintf(a.stdout, "added team %s, owner of %s%s\n", t.Name, t.Identity, only)
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&iamUser, "iam-user", "", "the IAM user whose key the team's members share")
	cmd.Flags().StringVar(&account, "account", "", "its AWS account (12 digits); may be left out when Keyward manages one account")
	cmd.Flags().BoolVar(&sessionOnly, "session-only", false, "members and API keys get short-lived session credentials, never the key itself")
	return cmd
}

func (a *app) teamAddMemberCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "add-member TEAM USER",
		Short: "Make a user (or an API key, as apikey:NAME) a member of a team",
		Args:  cobra.ExactArgs(2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				if err := svc.AddMember(cmd.Context(), cliActor(), args[0], args[1]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "%s is a member of %s\n", args[1], args[0])
				return err
			})
		}),
	}
}

func (a *app) teamListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the teams, their IAM users and members",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			return a.readAuth(cmd.Context(), func(svc *auth.Service) error {
				teams, err := svc.Teams(cmd.Context())
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(teams)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "TEAM\tIDENTITY\tMEMBERS")
				for _, t := range teams {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Identity, listOrNone(t.Members))
				}
				return tw.Flush()
			})
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (a *app) apikeyCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "apikey", Short: "Manage API keys for machines (only a hash of each is stored)"}
	cmd.AddCommand(a.apikeyCreateCommand(), a.apikeyRevokeCommand(), a.apikeyListCommand())
	return cmd
}

func (a *app) apikeyCreateCommand() *cobra.Command {
	var name, role, expires, output string
	var teams, cidrs []string
	cmd := &cobra.Command{
		Use:   "create --name NAME --role ROLE [--team TEAM]... [--cidr CIDR]... [--expires 90d]",
		Short: "Create an API key and print it, once",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usageErr("--name is required")
			}
			if err := auth.ValidateName("API key", name); err != nil {
				return usageErr("--name: %v", err)
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return usageErr("--role: %v", err)
			}
			var prefixes []netip.Prefix
			for _, c := range cidrs {
				p, err := auth.ParseCIDR(c)
				if err != nil {
					return usageErr("--cidr %v", err)
				}
				prefixes = append(prefixes, p)
			}
			ttl, err := auth.ParseKeyLifetime(expires)
			if err != nil {
				return usageErr("--expires %v", err)
			}
			if err := textOrJSON(output); err != nil {
				return err
			}
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				k, value, err := svc.CreateAPIKey(cmd.Context(), cliActor(), name, r, teams, prefixes, ttl)
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(struct {
						auth.APIKey
						Key string `json:"key"`
					}{k, value.Reveal()})
				}
				// The key alone on standard output, so that `> ci.key` makes a file --api-key-file reads.
				if _, err := fmt.Fprintln(a.stdout, value.Reveal()); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "This is API key %s (%s); it is shown only now. Send it as the X-API-Key header, or save it to a file for --api-key-file.\n",
					k.Name, k.Role)
				return nil
			})
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "the key's name")
	cmd.Flags().StringVar(&role, "role", "", "admin, operator, auditor, member or reporter (reports leaked keys only)")
	cmd.Flags().StringArrayVar(&teams, "team", nil, "a team whose key it may read (repeatable)")
	cmd.Flags().StringArrayVar(&cidrs, "cidr", nil, "a network it may be used from (repeatable; none: anywhere the server allows)")
	cmd.Flags().StringVar(&expires, "expires", "", "lifetime, such as 90d (default: none)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (a *app) apikeyRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an API key and every token issued for it",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return a.withAuth(cmd.Context(), func(svc *auth.Service, _ *vault.Vault, _ *store.DB) error {
				if err := svc.RevokeAPIKey(cmd.Context(), cliActor(), args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "revoked API key %s\n", args[0])
				return err
			})
		}),
	}
}

func (a *app) apikeyListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the API keys (never their values)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			return a.readAuth(cmd.Context(), func(svc *auth.Service) error {
				keys, err := svc.APIKeys(cmd.Context())
				if err != nil {
					return err
				}
				if output == "json" {
					return json.NewEncoder(a.stdout).Encode(keys)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKEY ID\tROLE\tTEAMS\tEXPIRES\tREVOKED")
				for _, k := range keys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", k.Name, k.KeyID, k.Role, listOrNone(k.Teams),
						timeOrDash(k.ExpiresAt), !k.RevokedAt.IsZero())
				}
				return tw.Flush()
			})
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}
