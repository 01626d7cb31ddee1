package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/audit/cloudwatch"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// actionConfigLoaded is the audit action of a configuration loaded by serve (the engine's actions are
// in package rotation, the vault commands' in package access).
const actionConfigLoaded = "config.loaded"

// trail returns the audit trail on db.
func (a *app) trail(db *store.DB) *audit.Trail { return audit.New(db.Audit(), nil, a.log) }

// cliActor names the person running a command, as the audit trail records it: cli:user@host.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli:" + name + "@" + host
}

// auditSigner returns the vault's audit signing key, unsealed (or made) on first use and kept:
// serve signs every checkpoint_interval, and must not unseal the key (a KMS call, maybe) each time.
func (a *app) auditSigner(v *vault.Vault) func(ctx context.Context) (audit.Signer, error) {
	var key *vault.SigningKey
	return func(ctx context.Context) (audit.Signer, error) {
		if key == nil {
			k, err := v.SigningKey(ctx, vault.PurposeAudit)
			if err != nil {
				return nil, err
			}
			key = &k
		}
		return key, nil
	}
}

// checkpoint signs the audit trail's end with the key signer gives. The records are durable
// already; a checkpoint that cannot be written is logged, and the next one covers them.
func (a *app) checkpoint(ctx context.Context, signer func(context.Context) (audit.Signer, error), db *store.DB) {
	key, err := signer(ctx)
	if err == nil {
		_, err = a.trail(db).Checkpoint(ctx, key)
	}
	if err != nil {
		a.log.Warn("audit checkpoint not written", "error", err.Error())
	}
}

// recordConfigLoaded records that a long-running command took its configuration into use.
func (a *app) recordConfigLoaded(ctx context.Context, db *store.DB, actor string) error {
	path := a.configPath
	if path == "" {
		path = "(defaults and environment)"
	}
	return a.trail(db).Record(ctx, audit.Event{Actor: actor, Action: actionConfigLoaded, Target: path, Outcome: audit.Success,
		Detail: map[string]string{"cloud": a.cfg.Cloud, "vault_driver": a.cfg.Vault.Driver, "key_source": a.cfg.Vault.MasterKey.Source}})
}

func (a *app) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify and export the tamper-evident audit trail"}
	cmd.AddCommand(a.auditVerifyCommand(), a.auditExportCommand())
	return cmd
}

func (a *app) auditVerifyCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain and signed checkpoints: exit 0 when intact, 1 naming the first bad record",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			v, db, err := a.loadAndOpenVault(ctx, dbExisting)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			keys, err := v.PublicSigningKeys(ctx, vault.PurposeAudit) // checking needs the public halves only
			if err != nil {
				return err
			}
			var progress func(int64)
			if bar := a.progress("verifying"); bar != nil {
				progress = func(seq int64) {
					if seq%1000 == 0 {
						bar(int(seq), -1)
					}
				}
			}
			rep, err := a.trail(db).Verify(ctx, audit.Ed25519Verifier(vault.PublicKeys(keys)), progress)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := json.NewEncoder(a.stdout).Encode(rep); err != nil {
					return err
				}
			} else if rep.OK() {
				last := "no checkpoint yet"
				if rep.Checkpoints > 0 {
					last = fmt.Sprintf("the last at record %d, signed by %s on %s", rep.Last.Seq, rep.Last.KeyID, rep.Last.Time.Format(time.RFC3339))
				}
				fmt.Fprintf(a.stdout, "audit trail intact: %d records, %d signed checkpoints (%s)\n", rep.Records, rep.Checkpoints, last)
			}
			if !rep.OK() {
				return fmt.Errorf("%w at record %d: %s", audit.ErrTampered, rep.BadSeq, rep.Problem)
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// parseTime reads a --since or --until value: RFC 3339, or a date (midnight UTC).
func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, usageErr("%s %q: want a time such as 2026-11-22T08:00:00Z or a date such as 2026-11-22", flag, s)
}

func (a *app) auditExportCommand() *cobra.Command {
	var since, until, output string
	cmd := &cobra.Command{
		Use:   "export [--since T] [--until T] [--output jsonl|text]",
		Short: "Print the audit trail's records, oldest first",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			from, err := parseTime("--since", since)
			if err != nil {
				return err
			}
			to, err := parseTime("--until", until)
			if err != nil {
				return err
			}
			if !from.IsZero() && !to.IsZero() && !from.Before(to) {
				return usageErr("--since (%s) must be before --until (%s)", since, until)
			}
			if output != "jsonl" && output != "text" {
				return usageErr("--output must be jsonl or text (got %q)", output)
			}
			if err := a.loadConfig(); err != nil {
				return err
			}
			ctx := cmd.Context()
			db, err := a.openDB(ctx, dbExisting)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			enc := json.NewEncoder(a.stdout)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			if output == "text" {
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tOUTCOME\tDETAIL")
			}
			err = a.trail(db).Export(ctx, from, to, func(r audit.Record) error {
				if output == "jsonl" {
					return enc.Encode(r)
				}
				var detail []string
				for _, k := range slices.Sorted(maps.Keys(r.Detail)) {
					detail = append(detail, k+"="+r.Detail[k])
				}
				_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Format(time.RFC3339), r.Actor, r.Action,
					r.Target, r.Outcome, strings.Join(detail, " "))
				return err
			})
			if err != nil {
				return err
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "only records at or after this time (RFC 3339 or a date)")
	cmd.Flags().StringVar(&until, "until", "", "only records before this time (RFC 3339 or a date)")
	cmd.Flags().StringVarP(&output, "output", "o", "jsonl", "output format: jsonl (one JSON record per line) or text")
	return cmd
}

// shipper returns what sends the trail to the configured sinks, or nil when there is none.
func (a *app) shipper(ctx context.Context, db *store.DB) (*audit.Shipper, error) {
	var sinks []audit.Sink
	if a.cfg.Audit.File != "" {
		sinks = append(sinks, audit.FileSink(a.cfg.Audit.File, a.stdout))
	}
	if cw := a.cfg.Audit.CloudWatch; cw.LogGroup != "" {
		cfg, err := a.awsConfig(ctx)
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, cloudwatch.New(cfg, cw.LogGroup, cw.LogStream, a.log))
	}
	if len(sinks) == 0 {
		return nil, nil
	}
	return &audit.Shipper{Store: db.Audit(), Cursors: db.Audit(), Sinks: sinks, Log: a.log}, nil
}

// shipOnce sends the sinks their backlog before a one-shot command exits; what cannot be sent now
// waits in the database for the next ship.
func (a *app) shipOnce(ctx context.Context, db *store.DB) {
	shipper, err := a.shipper(ctx, db)
	if err == nil && shipper != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = shipper.Ship(ctx)
	}
	if err != nil {
		a.log.Warn("audit trail not shipped; it will be with the next pass", "error", err.Error())
	}
}
