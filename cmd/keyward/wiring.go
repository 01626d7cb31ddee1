package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/term"

	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
	"github.com/keyward/keyward/internal/vault/awskms"
)

// dbMode says what opening the database may do to it.
type dbMode int

const (
	// dbMigrate applies pending migrations (serve).
	dbMigrate dbMode = iota
	// dbCreate migrates an empty database (first use: the bootstrap commands, rotate) — unless the
	// key file exists, which says the vault was moved or lost rather than never made — and refuses
	// one whose schema is behind, so that a command never changes a production schema as a side effect.
	dbCreate
	// dbExisting needs a database with this Keyward's schema, and never creates one: read-only
	// commands (status, vault get and list, audit verify and export).
	dbExisting
)

// openDB opens the database as mode allows.
func (a *app) openDB(ctx context.Context, mode dbMode) (*store.DB, error) {
	if err := a.resolveDSN(ctx); err != nil {
		return nil, err
	}
	if mode != dbMigrate && a.cfg.Vault.Driver == store.SQLite {
		if path := store.SQLitePath(a.cfg.Vault.DSN.Reveal()); path != "" {
			if info, err := os.Stat(path); (err != nil || info.Size() == 0) && (mode == dbExisting || a.keyFileExists()) {
				return nil, a.noDatabase(mode, fmt.Sprintf("the vault database %s does not exist or is empty", path))
			}
		}
	}
	db, err := store.Open(ctx, a.cfg.Vault.Driver, a.cfg.Vault.DSN.Reveal(), store.WithStatementTimeout(a.cfg.Database.StatementTimeout.Std()))
	if err != nil {
		return nil, err
	}
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if v == 0 && (mode == dbExisting || (mode == dbCreate && a.keyFileExists())) {
		db.Close()
		return nil, a.noDatabase(mode, "the vault database holds no Keyward schema")
	}
	if mode == dbMigrate || v == 0 {
		applied, err := db.Migrate(ctx)
		if err != nil {
			db.Close()
			return nil, err
		}
		for _, m := range applied {
			a.log.Info("applied migration", "version", m.Version, "name", m.Name)
		}
		return db, nil
	}
	if v != store.LatestVersion() {
		db.Close()
		if v > store.LatestVersion() {
			return nil, fmt.Errorf("database schema is at version %d, newer than this Keyward knows (%d): upgrade Keyward", v, store.LatestVersion())
		}
		return nil, fmt.Errorf("database schema is at version %d, this Keyward needs %d: run keyward migrate", v, store.LatestVersion())
	}
	return db, nil
}

// noDatabase is the error of a read-only command that finds no database: it never makes one, and a
// key file that exists says the database was likely moved or lost rather than never made.
func (a *app) noDatabase(mode dbMode, what string) error {
	msg := what
	if mode == dbExisting {
		msg += ": a read-only command never creates one"
	}
	if a.keyFileExists() {
		msg += "; the key file " + a.cfg.Vault.MasterKey.File + " exists, so the vault it protects was probably moved or lost: check vault.dsn"
	} else {
		msg += ": check vault.dsn (keyward serve or keyward migrate makes a new one)"
	}
	return errors.New(msg)
}

// keyFileExists says whether the configured key-encryption key is a file that exists.
func (a *app) keyFileExists() bool {
	mk := a.cfg.Vault.MasterKey
	if mk.Source != config.KeySourceFile {
		return false
	}
	_, err := os.Stat(mk.File)
	return err == nil
}

// openVault opens the database and the vault over it with the configured key-encryption key.
func (a *app) openVault(ctx context.Context, mode dbMode) (*vault.Vault, *store.DB, error) {
	db, err := a.openDB(ctx, mode)
	if err != nil {
		return nil, nil, err
	}
	kek, err := a.openKEK(ctx, a.cfg.Vault.MasterKey, db.Vault())
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	v, err := vault.New(ctx, db.Vault(), kek)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return v, db, nil
}

// resolveDSN reads vault.dsn from the Secrets Manager secret vault.dsn_secret_arn names, when it is
// set; the DSN (and its password) then never sits in the configuration.
func (a *app) resolveDSN(ctx context.Context) error {
	arn := a.cfg.Vault.DSNSecretARN
	if arn == "" {
		return nil
	}
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return err
	}
	out, err := secretsmanager.NewFromConfig(cfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return fmt.Errorf("vault.dsn_secret_arn: read the DSN: %w", err)
	}
	dsn := strings.TrimSpace(aws.ToString(out.SecretString))
	if a.cfg.Vault.Driver == store.Postgres {
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			// pgconn's parse errors redact the password of the string they quote.
			return asUsage(fmt.Errorf("vault.dsn_secret_arn: the secret %s is not a PostgreSQL connection string: %v", arn, err))
		}
	}
	a.cfg.Vault.DSN = secret.New(dsn)
	return nil
}

// loadAndOpenVault loads the configuration and opens the vault, for the commands that only use it.
func (a *app) loadAndOpenVault(ctx context.Context, mode dbMode) (*vault.Vault, *store.DB, error) {
	if err := a.loadConfig(); err != nil {
		return nil, nil, err
	}
	return a.openVault(ctx, mode)
}

// openKEK returns the key-encryption key a master_key configuration names. A missing key file is
// created (0600, with a warning) only while the vault holds no data key.
func (a *app) openKEK(ctx context.Context, mk config.MasterKey, st vault.Store) (vault.KEK, error) {
	switch mk.Source {
	case config.KeySourceFile:
		k, created, err := vault.OpenKeyFile(ctx, mk.File, st, a.log.Warn)
		if err != nil {
			return nil, err
		}
		if created {
			a.log.Warn("created a new key-encryption key file: back it up, without it the vault cannot be read",
				"path", mk.File, "kek_id", k.ID())
		}
		return k, nil
	case config.KeySourceEnv:
		k, err := vault.NewLocalKEK(mk.EnvValue)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %w", mk.Env, err)
		}
		return k, nil
	case config.KeySourceAWSKMS:
		cfg, err := a.awsConfig(ctx)
		if err != nil {
			return nil, err
		}
		return awskms.New(ctx, cfg, mk.KMSKeyID)
	}
	return nil, fmt.Errorf("unknown key source %q", mk.Source)
}

// awsConfig builds the AWS SDK configuration: the default credential chain, aws.region, and
// aws.endpoint_url for every service when set (moto, LocalStack).
func (a *app) awsConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(a.cfg.AWS.Region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if a.cfg.AWS.EndpointURL != "" {
		cfg.BaseEndpoint = aws.String(a.cfg.AWS.EndpointURL)
	}
	return cfg, nil
}

// isTerminal reports whether w is a terminal, where progress bars and tables make sense.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// closeQuietly closes the database at the end of a command; the command's result matters more.
func closeQuietly(db *store.DB) {
	if db != nil {
		_ = db.Close()
	}
}
