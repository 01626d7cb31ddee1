package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

func (a *app) migrateCommand() *cobra.Command {
	var output, from, to string
	cmd := &cobra.Command{
		Use:   "migrate [--from sqlite:PATH --to postgres:DSN]",
		Short: "Apply the database migrations this Keyward needs, or copy a SQLite vault into PostgreSQL",
		Long: `Without flags: apply the database migrations this Keyward needs to the configured database (safe
to run from several processes at once).

With --from sqlite:PATH --to postgres:DSN: grow from SQLite to PostgreSQL. Both databases are brought
to this Keyward's schema, then every row of the SQLite vault is copied into the PostgreSQL one, which
must be empty, in one transaction: sealed secrets as they are stored (nothing is decrypted, no key is
needed; keep the same vault.master_key). Afterwards each table's rows are counted on both sides and
the copied audit trail is verified against its signed checkpoints. serve must not run on the SQLite
database meanwhile (its lock is taken). A DSN with a password is better given as --to postgres: and
KEYWARD_MIGRATE_TO_DSN than on the command line.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			if from != "" || to != "" {
				return a.copyVault(cmd.Context(), from, to, output)
			}
			return a.migrate(cmd.Context(), output)
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&from, "from", "", "copy from this SQLite vault: sqlite:PATH")
	cmd.Flags().StringVar(&to, "to", "", "copy into this empty PostgreSQL database: postgres:DSN (postgres: alone reads KEYWARD_MIGRATE_TO_DSN)")
	return cmd
}

// migrate applies the migrations this binary needs to the configured database, and says which.
func (a *app) migrate(ctx context.Context, output string) error {
	if err := a.loadConfig(); err != nil {
		return err
	}
	if err := a.resolveDSN(ctx); err != nil {
		return err
	}
	db, err := store.Open(ctx, a.cfg.Vault.Driver, a.cfg.Vault.DSN.Reveal(), store.WithStatementTimeout(a.cfg.Database.StatementTimeout.Std()))
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	version, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if output == "json" {
		names := make([]string, len(applied))
		for i, m := range applied {
			names[i] = fmt.Sprintf("%04d_%s", m.Version, m.Name)
		}
		return json.NewEncoder(a.stdout).Encode(map[string]any{"applied": names, "schema_version": version})
	}
	for _, m := range applied {
		fmt.Fprintf(a.stdout, "applied %04d_%s\n", m.Version, m.Name)
	}
	_, err = fmt.Fprintf(a.stdout, "database schema at version %d\n", version)
	return err
}

// copyVault copies a SQLite vault into an empty PostgreSQL database and checks the copy.
func (a *app) copyVault(ctx context.Context, from, to, output string) error {
	path, dsn, err := a.copyEnds(from, to)
	if err != nil {
		return err
	}
	release, err := lockSQLiteServe(path)
	if err != nil {
		return fmt.Errorf("--from %s: %w", path, err)
	}
	defer release()
	src, err := store.Open(ctx, store.SQLite, path)
	if err != nil {
		return err
	}
	defer closeQuietly(src)
	dst, err := store.Open(ctx, store.Postgres, dsn)
	if err != nil {
		return err
	}
	defer closeQuietly(dst)
	for _, db := range []*store.DB{src, dst} {
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
	}
	var progress func(store.TableRows)
	if isTerminal(a.stderr) {
		progress = func(t store.TableRows) { fmt.Fprintf(a.stderr, "copied %-28s %d rows\n", t.Table, t.Rows) }
	}
	copied, err := src.CopyTo(ctx, dst, progress)
	if err != nil {
		return err
	}
	rep, err := a.checkCopy(ctx, src, dst, copied)
	if err != nil {
		return err
	}
	if output == "json" {
		return json.NewEncoder(a.stdout).Encode(map[string]any{"tables": copied, "audit_records": rep.Records, "audit_checkpoints": rep.Checkpoints, "verified": true})
	}
	var total int64
	for _, t := range copied {
		total += t.Rows
	}
	_, err = fmt.Fprintf(a.stdout, "copied %d rows of %d tables from %s into PostgreSQL; counts match; audit trail intact (%d records, %d signed checkpoints).\n"+
		"Point vault.driver at postgres and vault.dsn at it, keep vault.master_key, and start serve.\n",
		total, len(copied), path, rep.Records, rep.Checkpoints)
	return err
}

// copyEnds reads --from and --to: the SQLite vault's path and the PostgreSQL DSN (from
// KEYWARD_MIGRATE_TO_DSN when --to is postgres: alone).
func (a *app) copyEnds(from, to string) (path, dsn string, err error) {
	path, ok := strings.CutPrefix(from, "sqlite:")
	if !ok || path == "" {
		return "", "", usageErr("--from %q: want sqlite:PATH (the SQLite vault to copy)", from)
	}
	dsn, ok = strings.CutPrefix(to, "postgres:")
	if !ok {
		return "", "", usageErr("--to: want postgres:DSN (an empty PostgreSQL database)")
	}
	if dsn == "" {
		for _, kv := range a.environ {
			if v, found := strings.CutPrefix(kv, "KEYWARD_MIGRATE_TO_DSN="); found {
				dsn = v
			}
		}
		if dsn == "" {
			return "", "", usageErr("--to postgres: with no DSN: set KEYWARD_MIGRATE_TO_DSN")
		}
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return "", "", usageErr("--to: not a PostgreSQL connection string: %v", err) // pgconn redacts the password
	}
	if info, err := os.Stat(path); err != nil || info.Size() == 0 {
		return "", "", usageErr("--from %s: no SQLite vault there", path)
	}
	return path, dsn, nil
}

// checkCopy checks a copy: every table holds as many rows on both sides, and the trail verifies in
// its new home (its public keys read from the copy, no KEK needed) and ends where it ended.
func (a *app) checkCopy(ctx context.Context, src, dst *store.DB, copied []store.TableRows) (audit.Report, error) {
	for _, t := range copied {
		n, err := src.CountRows(ctx, t.Table)
		if err != nil {
			return audit.Report{}, err
		}
		if n != t.Rows {
			return audit.Report{}, fmt.Errorf("table %s: %d rows in SQLite, %d copied", t.Table, n, t.Rows)
		}
	}
	keys, err := vault.PublicSigningKeysOf(ctx, dst.Vault(), vault.PurposeAudit)
	if err != nil {
		return audit.Report{}, err
	}
	rep, err := a.trail(dst).Verify(ctx, audit.Ed25519Verifier(vault.PublicKeys(keys)), nil)
	if err != nil {
		return rep, err
	}
	if !rep.OK() {
		return rep, fmt.Errorf("the copied audit trail does not verify: %w at record %d: %s", audit.ErrTampered, rep.BadSeq, rep.Problem)
	}
	srcHead, err := src.Audit().Head(ctx)
	if err != nil {
		return rep, err
	}
	dstHead, err := dst.Audit().Head(ctx)
	if err != nil {
		return rep, err
	}
	if srcHead != dstHead {
		return rep, fmt.Errorf("the copied audit trail ends at record %d, the SQLite one at %d", dstHead.Seq, srcHead.Seq)
	}
	return rep, nil
}
