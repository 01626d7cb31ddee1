package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/secret"
)

// The demo: a simulated AWS account whose users' keys have various ages, a policy in minutes so the
// whole lifecycle can be watched, and an embedded vault in a temporary directory. No AWS account and
// no configuration file are needed.

const demoAccount = "123456789012"

// demoConfig returns the demo's configuration in dir, and writes it there as keyward.yaml so that
// other commands can be pointed at the demo's vault.
func demoConfig(dir string, base *config.Config) (*config.Config, string, error) {
	cfg := *base
	cfg.Cloud = "sim"
	cfg.Vault.Driver = "sqlite"
	cfg.Vault.DSN = secret.New(filepath.Join(dir, "keyward.db"))
	cfg.Vault.MasterKey = config.MasterKey{Source: config.KeySourceFile, File: filepath.Join(dir, "keyward.key"), Env: config.DefaultMasterKeyEnv}
	cfg.Rotation.RotateAfter = config.Duration(3 * time.Minute)
	cfg.Rotation.DeactivateAfter = config.Duration(1 * time.Minute)
	cfg.Rotation.DeleteAfter = config.Duration(1 * time.Minute)
	cfg.Rotation.QuietPeriod = config.Duration(30 * time.Second)
	cfg.Rotation.Interval = config.Duration(15 * time.Second)
	cfg.Rotation.VerifyTimeout = config.Duration(30 * time.Second)
	// The CI users' keys also go to a (simulated) Secrets Manager secret, as a rotation step.
	cfg.Delivery.Targets = []config.DeliveryTarget{{Match: config.DeliveryMatch{User: "ci-*"}, Kind: "secrets_manager", Name: "keyward/{account}/{user}"}}
	path := filepath.Join(dir, "keyward.yaml")
	yaml := fmt.Sprintf(`# Written by keyward serve --demo: points other commands at the demo's vault.
cloud: sim
vault:
  driver: sqlite
  dsn: %s
  master_key:
    source: file
    file: %s
`, cfg.Vault.DSN.Reveal(), cfg.Vault.MasterKey.File)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return nil, "", err
	}
	return &cfg, path, nil
}

// demoCloud is a simulated account of ten users in the situations Keyward meets.
func demoCloud(now time.Time) *sim.Cloud {
	c := sim.New(sim.WithKeyDelay(3 * time.Second))
	users := []struct {
		name, path string
		age        time.Duration // of the user's key
		tags       map[string]string
	}{
		{"ci-deploy", "/ci/", 4 * time.Minute, nil},
		{"ci-artifacts", "/ci/", 3*time.Minute + 30*time.Second, nil},
		{"backup-agent", "/apps/", 2 * time.Minute, nil},
		{"reporting", "/apps/", 1 * time.Minute, nil},
		{"partner-acme", "/partners/", 5 * time.Minute, nil},
		{"legacy-erp", "/apps/", 10 * time.Minute, nil}, // its consumer keeps using the old key: held
		{"monitoring", "/ops/", 30 * time.Second, nil},
		{"break-glass", "/ops/", 60 * time.Minute, map[string]string{"keyward:exempt": "true"}},
		{"fast-lane", "/ci/", 90 * time.Second, map[string]string{"keyward:rotate-after": "2m"}},
		{"two-keys", "/apps/", 8 * time.Minute, nil}, // two active keys: blocked until someone looks
	}
	for _, u := range users {
		c.AddUser(demoAccount, u.name, u.path, u.tags)
		c.AddKey(demoAccount, u.name, now.Add(-u.age), cloud.KeyActive)
	}
	c.AddKey(demoAccount, "two-keys", now.Add(-2*time.Minute), cloud.KeyActive)
	return c
}

// demoConsumer keeps using legacy-erp's original key, as an application nobody updated would.
func demoConsumer(ctx context.Context, c *sim.Cloud) {
	keys := c.Keys(demoAccount, "legacy-erp")
	if len(keys) == 0 {
		return
	}
	old := keys[0].ID
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.UseKey(old, now)
		}
	}
}
