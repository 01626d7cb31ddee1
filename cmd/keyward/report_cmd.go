package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/duration"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// inventoryReader reads the inventory through the engine's cloud (and its credential reports, when
// the cloud gives them).
func (a *app) inventoryReader(e *rotation.Engine, db *store.DB, provider cloud.Provider) *inventory.Reader {
	r := &inventory.Reader{Cloud: e.Cloud, Policy: e.Policy, Vault: e.Vault, TeamsOf: func(ctx context.Context) (map[vault.Identity][]string, error) {
		teams, err := db.Auth().Teams(ctx)
		if err != nil {
			return nil, err
		}
		return auth.TeamsByIdentity(teams), nil
	}}
	if inv, ok := provider.(cloud.Inventory); ok {
		r.Reports = inv
	}
	return r
}

// reports is the compliance report's service over a database.
func (a *app) reports(e *rotation.Engine, db *store.DB) *report.Service {
	return &report.Service{Inventory: db.Inventory(), Snapshots: db.Inventory(), Trail: a.trail(db), Rotations: db.Rotations(),
		Vault: e.Vault, Policy: e.Policy}
}

// refreshInventory reads the inventory and stores each account as it is read.
func (a *app) refreshInventory(ctx context.Context, r *inventory.Reader, db *store.DB, accountID string) error {
	accounts, err := r.Read(ctx, accountID, a.progress("reading IAM"))
	for _, acc := range accounts {
		if err := db.Inventory().SaveAccount(ctx, acc); err != nil {
			return err
		}
	}
	return err
}

// openForReports opens the engine, its database and the configured cloud (for its credential reports).
func (a *app) openForReports(ctx context.Context) (*rotation.Engine, *store.DB, cloud.Provider, error) {
	if err := a.loadConfig(); err != nil {
		return nil, nil, nil, err
	}
	v, db, err := a.openVault(ctx, dbExisting)
	if err != nil {
		return nil, nil, nil, err
	}
	provider, err := a.provider(ctx)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	dest, err := a.destination(ctx)
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return a.newEngine(v, db, provider, dest), db, provider, nil
}

func (a *app) inventoryCommand() *cobra.Command {
	var refresh bool
	var account, output string
	cmd := &cobra.Command{
		Use:   "inventory [--refresh] [--account ID] [--output json]",
		Short: "Every IAM user of every account, managed or not: keys, ages, last use, console, MFA, policy, team",
		Long: `inventory lists every IAM user of every configured account — those Keyward manages, and those it
does not (exempt, or outside its scope) — with each access key's id, status, age and last use, whether
the vault holds it, console access and MFA, and the root user's access keys. It answers from the last
read, stored with its time; --refresh (or a first run) reads IAM again: each account's credential
report where it can be had, per-user calls where not.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			if err := accountFlag(account); err != nil {
				return err
			}
			ctx := cmd.Context()
			e, db, provider, err := a.openForReports(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			accounts, err := db.Inventory().Accounts(ctx)
			if err != nil {
				return err
			}
			if refresh || len(accounts) == 0 {
				if err := a.refreshInventory(ctx, a.inventoryReader(e, db, provider), db, account); err != nil {
					return err
				}
				if accounts, err = db.Inventory().Accounts(ctx); err != nil {
					return err
				}
			}
			accounts = onlyAccount(accounts, account)
			if output == "json" {
				if accounts == nil {
					accounts = []inventory.Account{}
				}
				return json.NewEncoder(a.stdout).Encode(map[string]any{"accounts": accounts})
			}
			return printInventory(a.stdout, accounts)
		}),
	}
	cmd.Flags().BoolVar(&refresh, "refresh", false, "read IAM again")
	cmd.Flags().StringVar(&account, "account", "", "only this account")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func onlyAccount(accounts []inventory.Account, id string) []inventory.Account {
	if id == "" {
		return accounts
	}
	var out []inventory.Account
	for _, a := range accounts {
		if a.ID == id {
			out = append(out, a)
		}
	}
	return out
}

// printInventory prints one line per user.
func printInventory(w io.Writer, accounts []inventory.Account) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tUSER\tKEYS (id status age last-use managed)\tCONSOLE\tMFA\tPOLICY\tTEAM")
	for _, acc := range accounts {
		for _, u := range acc.Users {
			var keys []string
			for _, k := range u.Keys {
				used := "never"
				if !k.LastUsed.IsZero() {
					used = age(k.LastUsed) + " ago"
				}
				managed := "-"
				if k.Managed {
					managed = k.VaultState
				}
				keys = append(keys, fmt.Sprintf("%s %s %s %s %s", k.AccessKeyID, k.Status, age(k.CreatedAt), used, managed))
			}
			if u.Root {
				keys = []string{fmt.Sprintf("%d active root key(s)", u.RootKeys)}
			}
			policy := "managed"
			if u.ExemptBy != "" {
				policy = "exempt (" + u.ExemptBy + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", acc.ID, u.Name, orDash(strings.Join(keys, "; ")), yesNo(u.Console), yesNo(u.MFA),
				policy, orDash(strings.Join(u.Teams, " ")))
		}
		fmt.Fprintf(tw, "%s\t(read %s from the %s)\t\t\t\t\t\n", acc.ID, acc.ReadAt.Local().Format(time.DateTime), strings.ReplaceAll(acc.Source, "_", " "))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) reportCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "report", Short: "Reports for auditors"}
	var format, account, out string
	compliance := &cobra.Command{
		Use:   "compliance [--format table|json|csv|html] [--account ID] [--output FILE]",
		Short: "The CIS AWS Foundations controls on keys and console users, and Keyward's own policy, over the inventory",
		Long: `report compliance checks every user of the inventory (keyward inventory; read now if it was never
read) against the CIS AWS Foundations controls on credentials — keys rotated within 90 days, nothing
unused for 45 days, one active key per user, MFA for console users, no root access key — and against
Keyward's policy (overdue, held, blocked, failing, exempt, unowned and never-used keys). Each finding
names the identity, the evidence, a severity and the remedy. The HTML report is one self-contained
page (inline CSS and an SVG histogram of key ages), readable offline and printable. Exit 0 whatever
it finds: a report is not a gate.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			write, ok := map[string]func(io.Writer, report.Report) error{"table": report.WriteTable, "json": report.WriteJSON,
				"csv": report.WriteCSV, "html": report.WriteHTML}[format]
			if !ok {
				return usageErr("--format must be table, json, csv or html (got %q)", format)
			}
			if err := accountFlag(account); err != nil {
				return err
			}
			r, err := a.compliance(cmd.Context(), account)
			if err != nil {
				return err
			}
			w := a.stdout
			if out != "" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
				if err != nil {
					return usageErr("--output: %v", err)
				}
				defer f.Close()
				w = f
			}
			return write(w, r)
		}),
	}
	compliance.Flags().StringVar(&format, "format", "table", "table, json, csv or html")
	compliance.Flags().StringVar(&account, "account", "", "only this account")
	compliance.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	cmd.AddCommand(compliance)
	return cmd
}

// compliance builds the compliance report over the stored inventory (read first when there is none)
// with its 90 days of history.
func (a *app) compliance(ctx context.Context, account string) (report.Report, error) {
	e, db, provider, err := a.openForReports(ctx)
	if err != nil {
		return report.Report{}, err
	}
	defer closeQuietly(db)
	if stored, err := db.Inventory().Accounts(ctx); err != nil {
		return report.Report{}, err
	} else if len(stored) == 0 {
		if err := a.refreshInventory(ctx, a.inventoryReader(e, db, provider), db, ""); err != nil {
			return report.Report{}, err
		}
	}
	svc := a.reports(e, db)
	r, err := svc.Compliance(ctx, account)
	if err != nil {
		return report.Report{}, err
	}
	r.History, err = svc.History(ctx, 90)
	return r, err
}

func (a *app) remediateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "remediate", Short: "Act on a report's findings, explicitly"}
	var olderThan, output string
	var dryRun, includeUnmanaged bool
	unused := &cobra.Command{
		Use:   "unused --older-than 45d [--dry-run] [--include-unmanaged] [--output json]",
		Short: "Deactivate active keys unused that long (never an exempt user's, nor a managed identity's current key)",
		Long: `remediate unused deactivates the active access keys that have signed nothing for --older-than (or,
never used, were made that long ago), audited and told to their owners. Safety rule 3 holds: an
exempt user's keys are never touched, and a key Keyward does not manage only with
--include-unmanaged; the current key of an identity Keyward manages is listed but left (it is rotated
by policy). --dry-run says what would be done; it is the default when standard input is not a
terminal (give --dry-run=false to act from a script).`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			d, err := duration.Parse(olderThan)
			if err != nil || d < 24*time.Hour {
				return usageErr("--older-than %q: want a duration of at least 1d, such as 45d", olderThan)
			}
			if !cmd.Flags().Changed("dry-run") {
				dryRun = !isTerminal(a.stdin)
			}
			ctx := cmd.Context()
			e, db, err := a.existingEngine(ctx, output)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			remedies, errs := e.RemediateUnused(ctx, rotation.Remediation{OlderThan: d, IncludeUnmanaged: includeUnmanaged,
				DryRun: dryRun, Actor: cliActor(), Pass: rotation.PassOptions{Progress: a.progress("checking keys")}})
			a.checkpoint(context.WithoutCancel(ctx), a.auditSigner(e.Vault), db)
			a.deliverOnce(ctx, db, e.Owner)
			if err := printRemedies(a.stdout, remedies, output, dryRun); err != nil {
				return err
			}
			if len(errs) > 0 {
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			}
			return nil
		}),
	}
	unused.Flags().StringVar(&olderThan, "older-than", "45d", "unused at least this long")
	unused.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be done, change nothing (default when not on a terminal)")
	unused.Flags().BoolVar(&includeUnmanaged, "include-unmanaged", false, "deactivate keys Keyward does not manage too")
	unused.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(unused)
	return cmd
}

func printRemedies(w io.Writer, rs []rotation.Remedy, output string, dryRun bool) error {
	if output == "json" {
		if rs == nil {
			rs = []rotation.Remedy{}
		}
		return json.NewEncoder(w).Encode(map[string]any{"dry_run": dryRun, "keys": rs})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tUSER\tKEY\tUNUSED\tACTION\tWHY")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%dd\t%s\t%s\n", r.Identity.AccountID, r.Identity.UserName, r.AccessKeyID, r.UnusedDays, r.Action, orDash(r.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if dryRun {
		_, err := fmt.Fprintln(w, "dry run: nothing changed (--dry-run=false to act)")
		return err
	}
	return nil
}
