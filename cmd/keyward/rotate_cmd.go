package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/awsiam"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// policyFrom turns the configuration's rotation section into the engine's policy.
func policyFrom(r config.Rotation) rotation.Policy {
	p := rotation.Policy{
		RotateAfter: r.RotateAfter.Std(), DeactivateAfter: r.DeactivateAfter.Std(), DeleteAfter: r.DeleteAfter.Std(),
		QuietPeriod: r.QuietPeriod.Std(), ForceDeactivate: r.ForceDeactivate, VerifyTimeout: r.VerifyTimeout.Std(),
		ExemptGroup: r.ExemptGroup, DeleteForeignInactiveAfter: r.DeleteForeignInactiveAfter.Std(), LeakDeleteAfter: r.LeakDeleteAfter.Std(),
	}
	for _, rule := range r.Rules {
		p.Rules = append(p.Rules, rotation.Rule{PathPrefix: rule.PathPrefix, NameGlob: rule.NameGlob,
			RotateAfter: rule.RotateAfter.Std(), DeactivateAfter: rule.DeactivateAfter.Std(), DeleteAfter: rule.DeleteAfter.Std(),
			Exempt: rule.Exempt})
	}
	return p
}

// provider returns the configured cloud.
func (a *app) provider(ctx context.Context) (cloud.Provider, error) {
	if a.cfg.Cloud == "sim" {
		if !a.serving {
			return nil, errSimOutsideServe
		}
		return sim.New(), nil
	}
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	opts := awsiam.Options{OrganizationRoleName: a.cfg.AWS.Organization.RoleName,
		OrganizationExternalID: a.cfg.AWS.Organization.ExternalID, UserPath: a.cfg.AWS.UserPath, MaxRPS: a.cfg.AWS.MaxRPS, Logger: a.log}
	for _, acct := range a.cfg.AWS.Accounts {
		opts.Accounts = append(opts.Accounts, awsiam.AccountConfig{ID: acct.ID, RoleARN: acct.RoleARN, ExternalID: acct.ExternalID,
			UserPath: acct.UserPath})
	}
	return awsiam.New(cfg, opts), nil
}

// errSimOutsideServe: a command other than serve was pointed at the simulated cloud, which exists
// only inside the serve process that made it (the demo's, with its ten users).
var errSimOutsideServe = errors.New("cloud: sim is a simulated cloud that lives inside a running keyward serve (the demo's ten users are in the demo's " +
	"process): this command cannot reach it. In the demo, use the web interface (/ui/) or the API (GET /v1/status, POST /v1/teams/TEAM/rotate), " +
	"or the commands that read the vault: vault list, vault get, audit verify, user list, team list, apikey list, demo totp")

// newEngine builds the rotation engine over an open vault and a cloud.
// onDemandDeadline bounds a rotation asked for through the API; one cut off resumes from its records.
const onDemandDeadline = 10 * time.Minute

func (a *app) newEngine(v *vault.Vault, db *store.DB, provider cloud.Provider, dest delivery.Destination) *rotation.Engine {
	e := rotation.New(rotation.Engine{
		Cloud: provider, Vault: v, Store: db.Rotations(), Policy: policyFrom(a.cfg.Rotation), Log: a.log,
		Owner: rotation.ProcessOwner(), OwnerGone: rotation.LocalOwnerGone, VerifyInterval: a.cfg.Rotation.VerifyInterval.Std(), Hook: faultHook,
		Audit: a.trail(db), NoticeLead: a.cfg.Notify.LeadTime.Std(),
		OnDemand: rotation.NewOnDemand(a.cfg.Rotation.Concurrency, onDemandDeadline),
		Delivery: &rotation.Delivery{Router: a.deliveryRouter(db), To: dest, Records: db.Deliveries(), Timeout: a.cfg.Delivery.Timeout.Std()},
		Leaks:    db.Leaks(), Transient: store.Unavailable,
	})
	if n := a.notifier(db); n != nil { // a nil *Notifier in the interface would not be nil
		e.Notifier = n
	}
	return e
}

// openEngine opens the vault and the configured cloud, and the engine over them.
func (a *app) openEngine(ctx context.Context, mode dbMode) (*rotation.Engine, *store.DB, error) {
	v, db, err := a.openVault(ctx, mode)
	if err != nil {
		return nil, nil, err
	}
	provider, err := a.provider(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	dest, err := a.destination(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return a.newEngine(v, db, provider, dest), db, nil
}

// existingEngine checks --output (text or json), loads the configuration and opens the engine over
// an existing database: what the commands that read or act on managed keys start with.
func (a *app) existingEngine(ctx context.Context, output string) (*rotation.Engine, *store.DB, error) {
	if err := textOrJSON(output); err != nil {
		return nil, nil, err
	}
	if err := a.loadConfig(); err != nil {
		return nil, nil, err
	}
	return a.openEngine(ctx, dbExisting)
}

// progress returns a progress callback drawing a bar on a terminal, or nil.
func (a *app) progress(what string) func(done, known int) {
	if !isTerminal(a.stderr) {
		return nil
	}
	bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(a.stderr), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	return func(done, known int) {
		bar.ChangeMax(known)
		_ = bar.Set(done)
	}
}

func (a *app) rotateCommand() *cobra.Command {
	var once, dryRun, force bool
	var users []string
	var account, output string
	cmd := &cobra.Command{
		Use:   "rotate --once [--dry-run] [--user NAME]... [--account ID] [--force] [--output json]",
		Short: "Make one rotation pass, then exit 0 (no failures) or 1 (some failed, each named)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !once {
				return usageErr("--once is required: `keyward serve` runs passes on a schedule")
			}
			if err := textOrJSON(output); err != nil {
				return err
			}
			if force && len(users) == 0 {
				return usageErr("--force needs --user: it rotates the named users now, whatever their key's age")
			}
			opts, err := passFilter(users, account)
			if err != nil {
				return err
			}
			opts.Force = force
			return a.rotateOnce(cmd.Context(), opts, dryRun, output)
		}),
	}
	cmd.Flags().BoolVar(&once, "once", false, "make one pass and exit")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be done, change nothing")
	cmd.Flags().StringArrayVar(&users, "user", nil, "only this IAM user (repeatable)")
	cmd.Flags().StringVar(&account, "account", "", "only this account")
	cmd.Flags().BoolVar(&force, "force", false, "rotate the named users now, whatever their key's age")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// passFilter checks --user and --account and makes the pass's options of them.
func passFilter(users []string, account string) (rotation.PassOptions, error) {
	for _, u := range users {
		if err := vault.ValidateUserName(u); err != nil {
			return rotation.PassOptions{}, usageErr("--user: %v", err)
		}
	}
	if err := accountFlag(account); err != nil {
		return rotation.PassOptions{}, err
	}
	return rotation.PassOptions{Users: users, AccountID: account}, nil
}

// rotateOnce makes one pass (or plans it, dryRun), prints its report, and fails naming every user
// that failed.
func (a *app) rotateOnce(ctx context.Context, opts rotation.PassOptions, dryRun bool, output string) error {
	if err := a.loadConfig(); err != nil {
		return err
	}
	engine, db, err := a.openEngine(ctx, dbCreate) // --dry-run too: it is how a first look at an account starts
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	opts.Concurrency, opts.Progress = a.cfg.Rotation.Concurrency, a.progress("rotating")
	var rep rotation.Report
	if dryRun {
		rep = engine.DryRun(ctx, opts)
	} else {
		if err := a.recordConfigLoaded(ctx, db, "engine:"+engine.Owner); err != nil {
			return err
		}
		rep, err = engine.Pass(ctx, opts)
		a.checkpoint(context.WithoutCancel(ctx), a.auditSigner(engine.Vault), db)
		a.shipOnce(ctx, db)
		a.deliverOnce(ctx, db, engine.Owner)
		if err != nil {
			return err
		}
	}
	if err := a.printReport(rep, output, dryRun); err != nil {
		return err
	}
	var failed []string
	for _, r := range rep.Users {
		if r.Outcome == rotation.Failed {
			failed = append(failed, r.Identity.String())
		}
	}
	if len(failed) > 0 || len(rep.Errors) > 0 {
		return fmt.Errorf("%d users failed (%s)%s", len(failed), strings.Join(failed, ", "), joinErrors(rep.Errors))
	}
	return nil
}

func joinErrors(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	return "; " + strings.Join(errs, "; ")
}

func (a *app) printReport(rep rotation.Report, output string, dryRun bool) error {
	if output == "json" {
		if rep.Users == nil {
			rep.Users = []rotation.Result{}
		}
		return json.NewEncoder(a.stdout).Encode(struct {
			DryRun bool `json:"dry_run"`
			rotation.Report
		}{dryRun, rep})
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tUSER\tOUTCOME\tACTIONS\tREASON")
	for _, r := range rep.Users {
		var acts []string
		for _, x := range r.Actions {
			acts = append(acts, string(x.Kind)+" "+x.KeyID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Identity.AccountID, r.Identity.UserName, r.Outcome, strings.Join(acts, ", "), r.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := rep.Summary
	prefix := ""
	if dryRun {
		prefix = "dry run, nothing changed: "
	}
	_, err := fmt.Fprintf(a.stdout, "%sscanned %d: rotated %d, deactivated %d, deleted %d, held %d, blocked %d, failed %d, skipped %d, exempt %d\n",
		prefix, s.Scanned, s.Rotated, s.Deactivated, s.Deleted, s.Held, s.Blocked, s.Failed, s.Skipped, s.Exempt)
	for _, e := range rep.Errors {
		fmt.Fprintln(a.stdout, "error: "+e)
	}
	return err
}

func (a *app) statusCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [--output json]",
		Short: "Every managed identity with its keys, ages, state, next action and when it is due",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			engine, db, err := a.existingEngine(ctx, output)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			plans, errs := engine.PlanPass(ctx, rotation.PassOptions{Progress: a.progress("reading")})
			sched, err := a.schedulerHealth(db.Cluster().Scheduler, time.Time{})(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				if plans == nil {
					plans = []rotation.Plan{}
				}
				return json.NewEncoder(a.stdout).Encode(map[string]any{"identities": plans, "errors": errs, "scheduler": sched})
			}
			if err := a.printPlans(plans); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "\nScheduler: %s — %s\n", sched.State, sched.Reason)
			if len(errs) > 0 {
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printPlans prints the status table.
func (a *app) printPlans(plans []rotation.Plan) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tUSER\tSTATE\tKEYS (status/vault state age)\tNEXT\tDUE\tTARGETS\tREASON")
	for _, p := range plans {
		var keys []string
		for _, k := range p.Keys {
			keys = append(keys, fmt.Sprintf("%s %s/%s %s", k.AccessKeyID, k.Status, orDash(string(k.State)), age(k.CreatedAt)))
		}
		due := "-"
		if !p.Due.IsZero() {
			due = p.Due.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Identity.AccountID, p.Identity.UserName, p.State,
			strings.Join(keys, "; "), strings.TrimSpace(string(p.NextAction)+" "+p.NextKeyID), due, targetsLine(p.Targets), p.Reason)
	}
	return tw.Flush()
}

// targetsLine says how many of an identity's delivery targets hold its current key, naming those
// that do not.
func targetsLine(ts []delivery.TargetState) string {
	if len(ts) == 0 {
		return "-"
	}
	var behind []string
	for _, t := range ts {
		if !t.HoldsCurrent {
			behind = append(behind, t.Target)
		}
	}
	line := fmt.Sprintf("%d/%d current", len(ts)-len(behind), len(ts))
	if len(behind) > 0 {
		line += " (behind: " + strings.Join(behind, ", ") + ")"
	}
	return line
}

// age prints how old something created at t is, in the largest sensible unit.
func age(t time.Time) string {
	d := time.Since(t)
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
