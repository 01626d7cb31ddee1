package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"golang.org/x/term"

	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
	"github.com/keyward/keyward/internal/vault/awskms"
)

// openDB opens the database. With migrate set it applies pending migrations; otherwise it migrates
// only an empty database (first use) and refuses one whose schema is behind, so that a read-only
// command never changes a production schema as a side effect.
func (a *app) openDB(ctx context.Context, migrate bool) (*store.DB, error) {
	db, err := store.Open(ctx, a.cfg.Vault.Driver, a.cfg.Vault.DSN.Reveal())
	if err != nil {
		return nil, err
	}
	v, err := db.SchemaVersion(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if migrate || v == 0 {
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

// openVault opens the database and the vault over it with the configured key-encryption key.
func (a *app) openVault(ctx context.Context, migrate bool) (*vault.Vault, *store.DB, error) {
	db, err := a.openDB(ctx, migrate)
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

// loadAndOpenVault loads the configuration and opens the vault, for the commands that only use it.
func (a *app) loadAndOpenVault(ctx context.Context) (*vault.Vault, *store.DB, error) {
	if err := a.loadConfig(); err != nil {
		return nil, nil, err
	}
	return a.openVault(ctx, false)
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
