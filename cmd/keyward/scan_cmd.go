package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/scan"
	"github.com/keyward/keyward/internal/store"
)

// scanFlags are keyward scan's flags.
type scanFlags struct {
	history, staged, offline bool
	format                   string
}

func (a *app) scanCommand() *cobra.Command {
	var f scanFlags
	cmd := &cobra.Command{
		Use:   "scan [PATH…] [--git-history | --staged] [--format text|json|sarif] [--offline]",
		Short: "Find AWS access keys in files, staged changes or a git history (exit 1 when one is found)",
		Long: `scan looks for AWS access key ids (AKIA…, ASIA…, ABIA…, ACCA…, A3T…) and 40-character secret access
keys next to one or after an aws_secret_access_key-like name: in files and directories (PATH…, default
.), in the lines a commit would add (--staged, in the repository at PATH), or in every blob of a
repository's history (--git-history), each once. Binary files and .git are skipped; .keywardignore at
the root lists path globs and key ids to allow, and a line with keyward:allow is passed over; AWS's
documented example keys are allowed. Findings show file, line, commit and the key id cut to its first
8 characters — never a secret. With a Keyward configuration at hand (--config, or ./keyward.yaml) each
finding also says whose key it is — from the vault, or IAM itself — and what to do; --offline skips
that. Exit 1 when something was found, 0 when clean, 2 on bad input.`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if f.history && f.staged {
				return usageErr("give --git-history or --staged, not both")
			}
			if f.format != "text" && f.format != "json" && f.format != "sarif" {
				return usageErr("--format must be text, json or sarif (got %q)", f.format)
			}
			if len(args) == 0 {
				args = []string{"."}
			}
			if (f.history || f.staged) && len(args) != 1 {
				return usageErr("--git-history and --staged scan one repository: give one PATH")
			}
			return a.scan(cmd.Context(), args, f)
		}),
	}
	cmd.Flags().BoolVar(&f.history, "git-history", false, "scan every blob of the repository's history")
	cmd.Flags().BoolVar(&f.staged, "staged", false, "scan the lines staged for the next commit")
	cmd.Flags().BoolVar(&f.offline, "offline", false, "do not look up whose keys they are")
	cmd.Flags().StringVar(&f.format, "format", "text", "text, json or sarif")
	cmd.AddCommand(a.scanInstallHookCommand())
	return cmd
}

// scan runs the scan, looks the keys up, prints, and fails when something was found.
func (a *app) scan(ctx context.Context, paths []string, f scanFlags) error {
	root := paths[0]
	if info, err := os.Stat(root); err != nil {
		return usageErr("%s: no such file or directory", root)
	} else if !info.IsDir() {
		root = filepath.Dir(root)
	}
	ignore, err := scan.LoadIgnore(root)
	if err != nil {
		return asUsage(err)
	}
	s := scan.New(ignore)
	var found []scan.Finding
	switch {
	case f.history:
		found, err = s.History(paths[0])
	case f.staged:
		found, err = s.Staged(paths[0])
	default:
		found, err = s.Paths(paths)
	}
	if errors.Is(err, scan.ErrInput) {
		return asUsage(err)
	} else if err != nil {
		return err
	}
	if !f.offline && len(found) > 0 {
		a.lookUpOwners(ctx, found)
	}
	switch f.format {
	case "json":
		err = scan.WriteJSON(a.stdout, found, s.Bytes)
	case "sarif":
		err = scan.WriteSARIF(a.stdout, found, version)
	default:
		err = scan.WriteText(a.stdout, found)
	}
	if err != nil {
		return err
	}
	if isTerminal(a.stderr) {
		fmt.Fprintf(a.stderr, "scanned %.1f MB\n", float64(s.Bytes)/1e6)
	}
	if len(found) > 0 {
		return fmt.Errorf("%d AWS credentials found: report each with keyward leak KEY_ID, and remove it from the file and its history", len(found))
	}
	return nil
}

// lookUpOwners says whose each found key is, when a configuration is at hand (an explicit --config,
// ./keyward.yaml, or a vault named by KEYWARD_VAULT_DSN) and its database exists; otherwise, or if
// that fails, findings stay unnamed.
func (a *app) lookUpOwners(ctx context.Context, found []scan.Finding) {
	if !a.configAtHand() {
		return
	}
	if err := a.loadConfig(); err != nil {
		fmt.Fprintf(a.stderr, "keyward: owners not looked up: %v\n", err)
		return
	}
	engine, db, err := a.openEngine(ctx, dbExisting)
	if err != nil {
		fmt.Fprintf(a.stderr, "keyward: owners not looked up: %v\n", err)
		return
	}
	defer closeQuietly(db)
	owners := map[string]*scan.Owner{}
	for i, f := range found {
		id := f.FullKeyID()
		if id == "" {
			continue
		}
		if _, done := owners[id]; !done {
			owners[id] = a.owner(ctx, engine, db, id)
		}
		found[i].Owner = owners[id]
	}
}

// configAtHand says whether a Keyward configuration is there to be loaded.
func (a *app) configAtHand() bool {
	if a.configPath != "" {
		return true
	}
	if _, err := os.Stat(config.DefaultPath); err == nil {
		return true
	}
	return slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, "KEYWARD_VAULT_DSN=") })
}

// owner is whose one key is, and the advice for it.
func (a *app) owner(ctx context.Context, e *rotation.Engine, db *store.DB, keyID string) *scan.Owner {
	k, err := e.Whose(ctx, keyID)
	if err != nil {
		return &scan.Owner{State: "unknown", Advice: "could not be looked up: " + err.Error()}
	}
	o := &scan.Owner{State: k.State, Managed: k.Managed}
	if k.Identity != nil {
		o.Account, o.User = k.Identity.AccountID, k.Identity.UserName
		if t, err := db.Auth().TeamOf(ctx, *k.Identity); err == nil {
			o.Team = t.Name
		} else if !errors.Is(err, auth.ErrNotFound) {
			a.log.Warn("team of a found key not looked up", "error", err.Error())
		}
	}
	report := "keyward leak " + scan.Redact(keyID) + " (the whole id is on that line)"
	switch {
	case k.Managed && k.State == "current":
		o.Advice = "the key in use now: report it at once — " + report + " replaces and deactivates it"
	case k.Managed && k.State == "previous":
		o.Advice = "an old key still active: " + report + " deactivates it at once"
	case k.Managed && (k.State == "inactive" || k.State == "pending"):
		o.Advice = "no longer signs requests and is deleted soon: remove it from the file and its history"
	case k.Managed:
		o.Advice = "deleted already: harmless; remove it from the file and its history"
	case k.State == "active":
		o.Advice = "not managed by Keyward: " + report + " --deactivate-unmanaged, then its owner replaces it"
	case k.State == "inactive":
		o.Advice = "inactive: harmless while it stays so; its owner should delete it"
	default:
		o.Advice = "no configured account knows it: another organisation's key, deleted long ago, or not a real key"
	}
	return o
}

func (a *app) scanInstallHookCommand() *cobra.Command {
	var repo string
	var force bool
	cmd := &cobra.Command{
		Use:   "install-hook [--repo DIR] [--force]",
		Short: "Write a git pre-commit hook that refuses a commit adding an AWS key (keyward scan --staged)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			out, err := exec.Command("git", "-C", repo, "rev-parse", "--git-path", "hooks").Output()
			if err != nil {
				return usageErr("%s is not in a git repository", repo)
			}
			hooks := strings.TrimSpace(string(out))
			if !filepath.IsAbs(hooks) {
				hooks = filepath.Join(repo, hooks)
			}
			path := filepath.Join(hooks, "pre-commit")
			if _, err := os.Stat(path); err == nil && !force {
				return usageErr("%s exists: add `keyward scan --staged --offline` to it, or use --force to replace it", path)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			script := fmt.Sprintf("#!/bin/sh\n# Written by keyward scan install-hook: refuses a commit that adds an AWS access key.\n"+
				"# A false positive: add keyward:allow to its line, or a pattern to .keywardignore.\n"+
				"exec %q scan --staged --offline \"$(git rev-parse --show-toplevel)\"\n", self)
			if err := os.MkdirAll(hooks, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "wrote %s\n", path)
			return err
		}),
	}
	cmd.Flags().StringVar(&repo, "repo", ".", "the repository")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing pre-commit hook")
	return cmd
}
