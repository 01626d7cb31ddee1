package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/delivery/awsdelivery"
	"github.com/keyward/keyward/internal/delivery/github"
	"github.com/keyward/keyward/internal/delivery/gitlab"
	"github.com/keyward/keyward/internal/delivery/host"
	"github.com/keyward/keyward/internal/delivery/kube"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// destination is where delivery targets are written: AWS for the aws cloud, memory for the
// simulated one (the demo's).
func (a *app) destination(ctx context.Context) (delivery.Destination, error) {
	onHost := host.New(a.log, os.Getenv("PATH"), os.Getenv("HOME"))
	if faultHook != nil { // the crash tests: a kill between a credentials file's temporary write and its rename
		onHost.BeforeRename = func() { _ = faultHook("credentials_file.rename") }
	}
	to := delivery.ByKind{delivery.CredentialsFile: onHost, delivery.Exec: onHost,
		delivery.GitHubActions: github.New(a.log), delivery.GitLabCI: gitlab.New(a.log), delivery.KubernetesSecret: kube.New(a.log)}
	if a.cfg.Cloud == "sim" {
		mem := delivery.NewMemory()
		to[delivery.SecretsManager], to[delivery.SSMParameter] = mem, mem
		return to, nil
	}
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	aws := awsdelivery.New(cfg)
	to[delivery.SecretsManager], to[delivery.SSMParameter] = aws, aws
	return to, nil
}

// deliveryRouter says which targets each identity has, from the configuration and the user's tag.
func (a *app) deliveryRouter(db *store.DB) *delivery.Router {
	r := &delivery.Router{DefaultRegion: a.cfg.AWS.Region}
	for _, t := range a.cfg.Delivery.Targets {
		r.Targets = append(r.Targets, t.Target())
	}
	teams := &teamIndex{db: db}
	r.TeamsOf = teams.of
	return r
}

// teamIndex names the teams of an identity, from a list of every team read at most every 30 seconds
// (a pass asks once per user; a team added meanwhile is seen at the next pass or two).
type teamIndex struct {
	db *store.DB

	mu   sync.Mutex
	read time.Time
	by   map[vault.Identity][]string
}

func (x *teamIndex) of(ctx context.Context, id vault.Identity) ([]string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.by == nil || time.Since(x.read) > 30*time.Second {
		teams, err := x.db.Auth().Teams(ctx)
		if err != nil {
			return nil, err
		}
		x.by = auth.TeamsByIdentity(teams)
		x.read = time.Now()
	}
	return x.by[id], nil
}

func (a *app) deliverCommand() *cobra.Command {
	var check, repair bool
	var users []string
	var account, output string
	cmd := &cobra.Command{
		Use:   "deliver (--check | --repair) [--user NAME]... [--account ID] [--output json]",
		Short: "Compare every delivery target with the vault (exit 1 naming each stale one), or rewrite the stale ones",
		Long: `deliver --check reads every Secrets Manager secret and Parameter Store parameter that a managed
identity delivers to, and compares what it holds as current with the vault's current key (secret
included). It exits 1 naming each target that is stale or cannot be read. deliver --repair gives each
stale target the current key (recorded and audited) and exits 1 if one could not be repaired.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if check == repair {
				return usageErr("give one of --check and --repair")
			}
			opts, err := passFilter(users, account)
			if err != nil {
				return err
			}
			return a.deliver(cmd.Context(), opts, repair, output)
		}),
	}
	cmd.Flags().BoolVar(&check, "check", false, "compare every target with the vault")
	cmd.Flags().BoolVar(&repair, "repair", false, "rewrite the targets that do not hold the current key")
	cmd.Flags().StringArrayVar(&users, "user", nil, "only this IAM user (repeatable)")
	cmd.Flags().StringVar(&account, "account", "", "only this account")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// deliver checks (or repairs) the delivery targets and prints one line per target.
func (a *app) deliver(ctx context.Context, opts rotation.PassOptions, repair bool, output string) error {
	engine, db, err := a.existingEngine(ctx, output)
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	opts.Progress = a.progress("reading targets")
	checks, errs := engine.CheckDeliveries(ctx, opts, repair)
	if output == "json" {
		if checks == nil {
			checks = []rotation.TargetCheck{}
		}
		if err := json.NewEncoder(a.stdout).Encode(map[string]any{"targets": checks, "errors": errs}); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tUSER\tTARGET\tHOLDS\tCURRENT\tSTATE")
		for _, c := range checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Identity.AccountID, c.Identity.UserName, c.Target, orDash(c.Held), c.Want, checkState(c))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, c := range checks {
			if c.Note != "" {
				fmt.Fprintf(a.stdout, "%s %s: %s\n", c.Identity, c.Target, c.Note)
			}
		}
	}
	var bad []string
	for _, c := range checks {
		if c.Stale && !c.Repaired {
			bad = append(bad, c.Identity.String()+" "+c.Target)
		}
	}
	if len(bad) > 0 || len(errs) > 0 {
		return fmt.Errorf("%d targets do not hold the current key (%s)%s", len(bad), strings.Join(bad, ", "), joinErrors(errs))
	}
	return nil
}

func checkState(c rotation.TargetCheck) string {
	switch {
	case c.Repaired:
		return "repaired"
	case c.Error != "":
		return "error: " + c.Error
	case c.Stale:
		return "stale"
	}
	return "ok"
}
