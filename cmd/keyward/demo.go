package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/vault"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/rotation"
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

// demoPerson is one of the demo's people: a role, teams, and an authenticator when the role needs it.
type demoPerson struct {
	name  string
	role  auth.Role
	teams []string
	mfa   bool
}

// demoPeople are who signs in to the demo's web pages.
var demoPeople = []demoPerson{
	{"ada", auth.RoleAdmin, nil, true},
	{"oscar", auth.RoleOperator, []string{"ci"}, false},
	{"alma", auth.RoleAuditor, nil, false},
	{"mia", auth.RoleMember, []string{"ci"}, true},
	{"sam", auth.RoleMember, []string{"partners"}, true},
}

// demoSeed makes the demo's teams and people, and prints how to sign in: the UI's address first.
func (a *app) demoSeed(ctx context.Context, c *components) error {
	svc := c.api.Auth
	for team, user := range map[string]string{"ci": "ci-deploy", "partners": "partner-acme"} {
		if _, err := svc.AddTeam(ctx, "cli:demo", auth.Team{Name: team, Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: demoAccount, UserName: user}}); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "\nThe web interface: http://%s/ui/\nSign in as (password, then the code of `%s demo totp NAME --config %s`):\n",
		a.cfg.Server.Listen, a.selfCommand(), a.demoConfigPath)
	for _, p := range demoPeople {
		pw := secret.New(randomWords())
		if _, err := svc.AddUser(ctx, "cli:demo", p.name, p.role, p.teams, pw); err != nil {
			return err
		}
		seed := "-"
		if p.mfa {
			uri, err := svc.EnrollMFA(ctx, "cli:demo", p.name)
			if err != nil {
				return err
			}
			if u, err := url.Parse(uri.Reveal()); err == nil {
				seed = u.Query().Get("secret")
			}
		}
		teams := strings.Join(p.teams, ",")
		if teams == "" {
			teams = "-"
		}
		fmt.Fprintf(a.stdout, "  %-6s %-9s teams %-9s password %-24s TOTP seed %s\n", p.name, p.role, teams, pw.Reveal(), seed)
	}
	fmt.Fprintln(a.stdout)
	return nil
}

// randomWords is a demo password: four short words from a small list (the demo's only).
func randomWords() string {
	words := strings.Fields("amber basil cedar delta ember fable grove harbor iris jade kelp lunar maple noble orbit pearl quill raven sable tidal umber velvet willow")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	out := make([]string, 4)
	for i := range out {
		out[i] = words[int(b[i])%len(words)]
	}
	return strings.Join(out, "-")
}

// freeListen keeps addr when it can be listened on, and otherwise picks a free port on the same host
// (the demo's 8080 may be taken).
func freeListen(addr string) (string, bool) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		defer ln.Close()
		return ln.Addr().String(), false // the port itself when addr asked for any (:0)
	}
	host, _, _ := net.SplitHostPort(addr)
	if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
		return addr, false
	}
	defer ln.Close()
	return ln.Addr().String(), true
}

func (a *app) demoCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "demo", Short: "Helpers for keyward serve --demo"}
	cmd.AddCommand(&cobra.Command{
		Use:   "totp NAME --config DEMO/keyward.yaml",
		Short: "Print the authenticator code of one of the demo's people (as their app would show it now)",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.readAuth(ctx, func(svc *auth.Service) error {
				code, err := svc.TOTPCode(ctx, args[0], time.Now())
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stdout, code)
				return err
			})
		}),
	})
	return cmd
}

// demoTable prints, after each of the demo's passes, what changed: the pass's counts when it did
// anything, and the rows of the identities whose state or next step changed (all of them the
// first time); Enter prints the whole table.
type demoTable struct {
	a    *app
	mu   sync.Mutex
	last map[string]string // identity → what its row said
	all  []rotation.Plan
}

func (d *demoTable) passed(s rotation.Summary, plans []rotation.Plan) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var changed []rotation.Plan
	seen := make(map[string]string, len(plans))
	for _, p := range plans {
		row := fmt.Sprintf("%s|%s|%s|%s|%v", p.State, p.NextAction, p.NextKeyID, p.Reason, p.Due.Truncate(time.Second))
		for _, k := range p.Keys {
			row += "|" + k.AccessKeyID + string(k.Status) + string(k.State)
		}
		id := p.Identity.String()
		seen[id] = row
		if d.last == nil || d.last[id] != row {
			changed = append(changed, p)
		}
	}
	d.last, d.all = seen, plans
	acted := s.Rotated+s.Deactivated+s.Deleted+s.Failed > 0
	if !acted && len(changed) == 0 {
		return
	}
	fmt.Fprintf(d.a.stdout, "\n%s pass: rotated %d, deactivated %d, deleted %d, held %d, blocked %d, failed %d\n",
		time.Now().Format(time.TimeOnly), s.Rotated, s.Deactivated, s.Deleted, s.Held, s.Blocked, s.Failed)
	if len(changed) > 0 {
		_ = d.a.printPlans(changed)
	}
}

// onEnter prints the whole table each time a line is read, until in ends.
func (d *demoTable) onEnter(in io.Reader) {
	if in == nil {
		return
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		d.mu.Lock()
		_ = d.a.printPlans(d.all)
		d.mu.Unlock()
	}
}

// selfCommand is how to run this binary again from another terminal, as the demo's hints print it:
// keyward when that is on PATH, the binary's own path when it is kept, and go run ./cmd/keyward from
// a checkout run through go run (whose binary is deleted when it exits).
func (a *app) selfCommand() string {
	if _, err := exec.LookPath("keyward"); err == nil {
		return "keyward"
	}
	exe, err := os.Executable()
	if err == nil && !strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return exe
	}
	if _, err := os.Stat(filepath.Join("cmd", "keyward")); err == nil {
		return "go run ./cmd/keyward"
	}
	if err == nil {
		return exe
	}
	return "keyward"
}
