package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

func (a *app) vaultCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "vault", Short: "Store, read and maintain credentials in the vault"}
	cmd.AddCommand(a.vaultImportCommand(), a.vaultGetCommand(), a.vaultListCommand(), a.vaultExportCommand(), a.vaultRewrapCommand())
	return cmd
}

// maxSecretInput bounds what --secret-stdin reads: a secret access key is 40 characters.
const maxSecretInput = 4096

// importFlags are vault import's flags.
type importFlags struct {
	user, account, keyID, output string
	fromStdin                    bool
}

func (a *app) vaultImportCommand() *cobra.Command {
	var f importFlags
	cmd := &cobra.Command{
		Use:   "import --user NAME [--account ID] --access-key-id ID --secret-stdin",
		Short: "Store a key whose secret you already have, as the user's current credential (or give an adopted key its secret)",
		Args:  cobra.NoArgs,
		RunE:  runE(func(cmd *cobra.Command, _ []string) error { return a.importKey(cmd.Context(), f) }),
	}
	cmd.Flags().StringVar(&f.user, "user", "", "IAM user name")
	cmd.Flags().StringVar(&f.account, "account", "", "AWS account id (12 digits); may be left out when the vault knows the user in one account")
	cmd.Flags().StringVar(&f.keyID, "access-key-id", "", "access key id (AKIA…)")
	cmd.Flags().BoolVar(&f.fromStdin, "secret-stdin", false, "read the secret access key from standard input")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	return cmd
}

// importKey checks what the command line says before reading the secret or opening anything, then
// stores the key through the vault's service.
func (a *app) importKey(ctx context.Context, f importFlags) error {
	// Check everything the command line says before reading the secret or opening anything.
	switch {
	case f.user == "":
		return usageErr("--user is required")
	case f.keyID == "":
		return usageErr("--access-key-id is required")
	case !f.fromStdin:
		return usageErr("--secret-stdin is required: Keyward never takes a secret on the command line, where other users and shell history can see it")
	}
	if err := textOrJSON(f.output); err != nil {
		return err
	}
	if err := vault.ValidateUserName(f.user); err != nil {
		return usageErr("--user: %v", err)
	}
	if err := vault.ValidateAccessKeyID(f.keyID); err != nil {
		return usageErr("--access-key-id: %v", err)
	}
	if f.account != "" {
		if err := (vault.Identity{Cloud: vault.CloudAWS, AccountID: f.account, UserName: f.user}).Validate(); err != nil {
			return usageErr("--account: %v", err)
		}
	}
	raw, err := io.ReadAll(io.LimitReader(a.stdin, maxSecretInput+1))
	if err != nil {
		return fmt.Errorf("read secret from standard input: %w", err)
	}
	if len(raw) > maxSecretInput {
		return usageErr("secret on standard input is longer than %d bytes", maxSecretInput)
	}
	sec := secret.New(strings.TrimRight(string(raw), "\r\n"))
	if err := vault.ValidateSecret(sec); err != nil {
		return usageErr("secret on standard input: %v", err)
	}

	v, db, err := a.loadAndOpenVault(ctx, dbCreate)
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	svc := a.vaultAccess(v, db)
	id, err := svc.Identity(ctx, f.user, f.account)
	if errors.Is(err, access.ErrAccountNeeded) {
		return usageErr("--account is required: %v", err)
	} else if err != nil {
		return err
	}
	ver, err := svc.Import(ctx, cliActor(), id, f.keyID, sec)
	if errors.Is(err, vault.ErrDuplicate) {
		return usageErr("access key %s is already in the vault", f.keyID)
	}
	if err != nil {
		return err
	}
	a.checkpoint(ctx, a.auditSigner(v), db)
	a.log.Info("credential imported", "identity", id.String(), "access_key_id", f.keyID, "version", ver.Number)
	if f.output == "json" {
		return json.NewEncoder(a.stdout).Encode(ver)
	}
	_, err = fmt.Fprintf(a.stdout, "stored %s as version %d (%s) of %s\n", f.keyID, ver.Number, ver.State, id)
	return err
}

// vaultAccess is the service the vault commands call: it records what they do, and reads only once
// the reading is on the record.
func (a *app) vaultAccess(v *vault.Vault, db *store.DB) *access.Service {
	return &access.Service{Vault: v, Audit: a.trail(db), Store: db}
}

// credentialFormats render a credential for its consumers.
var credentialFormats = map[string]func(w io.Writer, c vault.Credential) error{
	"json": func(w io.Writer, c vault.Credential) error {
		return json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId": c.AccessKeyID, "SecretAccessKey": c.SecretAccessKey.Reveal(),
		})
	},
	// The AWS CLI and SDKs run a credential_process and read this document from its output.
	"credential-process": func(w io.Writer, c vault.Credential) error {
		return json.NewEncoder(w).Encode(struct {
			Version         int
			AccessKeyID     string `json:"AccessKeyId"`
			SecretAccessKey string
		}{1, c.AccessKeyID, c.SecretAccessKey.Reveal()})
	},
	"env": func(w io.Writer, c vault.Credential) error {
		_, err := fmt.Fprintf(w, "export AWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=%s\n",
			c.AccessKeyID, shellQuote(c.SecretAccessKey.Reveal()))
		return err
	},
	"ini": func(w io.Writer, c vault.Credential) error {
		_, err := fmt.Fprintf(w, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
			c.Identity.UserName, c.AccessKeyID, c.SecretAccessKey.Reveal())
		return err
	},
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe characters (AWS secrets may
// hold '/' and '+', which are safe).
func shellQuote(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/+=-_.", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) vaultGetCommand() *cobra.Command {
	var account, output string
	cmd := &cobra.Command{
		Use:   "get NAME [--account ID] [--output json|env|ini|credential-process]",
		Short: "Print a user's current credential",
		Args:  cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			render, ok := credentialFormats[output]
			if !ok {
				return usageErr("--output must be json, env, ini or credential-process (got %q)", output)
			}
			if err := vault.ValidateUserName(args[0]); err != nil {
				return usageErr("%v", err)
			}
			ctx := cmd.Context()
			v, db, err := a.loadAndOpenVault(ctx, dbExisting)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			svc := a.vaultAccess(v, db)
			id, err := svc.Identity(ctx, args[0], account)
			if errors.Is(err, vault.ErrAmbiguous) {
				return asUsage(err)
			}
			if err != nil {
				return err
			}
			c, err := svc.Reveal(ctx, cliActor(), id)
			if errors.Is(err, vault.ErrNotFound) {
				return fmt.Errorf("no current credential for %s", id)
			}
			if err != nil {
				return err
			}
			a.checkpoint(ctx, a.auditSigner(v), db)
			a.log.Info("credential read", "identity", id.String(), "access_key_id", c.AccessKeyID, "by", "cli")
			return render(a.stdout, c)
		}),
	}
	cmd.Flags().StringVar(&account, "account", "", "AWS account id, when the user name exists in several accounts")
	cmd.Flags().StringVarP(&output, "output", "o", "json", "output format: json, env, ini or credential-process")
	return cmd
}

func (a *app) vaultExportCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "export [--output json|csv]",
		Short: "Print every current key the vault holds, secrets included (each read audited)",
		Long: `vault export prints the current key of every identity the vault holds one for — a team's or not —
with its secret, as JSON or as CSV (account,user,team,access_key_id,secret_access_key,created,state).
Every key read is an audit record, written before anything is printed. Keys adopted without their
secret are not printed.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "json" && output != "csv" {
				return usageErr("--output must be json or csv (got %q)", output)
			}
			ctx := cmd.Context()
			v, db, err := a.loadAndOpenVault(ctx, dbExisting)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			creds, err := a.vaultAccess(v, db).ExportAll(ctx, db.Auth(), cliActor(), "cli")
			if err != nil {
				return err
			}
			a.checkpoint(ctx, a.auditSigner(v), db)
			a.log.Info("credentials exported", "count", len(creds), "by", "cli")
			if output == "csv" {
				return access.WriteCSV(a.stdout, creds)
			}
			return json.NewEncoder(a.stdout).Encode(map[string]any{"credentials": access.Documents(creds)})
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "json", "output format: json or csv")
	return cmd
}

// identityVersions is one identity and its versions, as vault list prints them.
type identityVersions struct {
	vault.Identity
	Versions []vault.Version `json:"versions"`
}

func (a *app) vaultListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List identities and their key versions (never a secret)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
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
			// Listing needs no key-encryption key: it reads metadata only.
			versions, err := db.Vault().Versions(ctx)
			if err != nil {
				return err
			}
			var ids []identityVersions
			for _, ver := range versions {
				if len(ids) == 0 || ids[len(ids)-1].Identity != ver.Identity {
					ids = append(ids, identityVersions{Identity: ver.Identity})
				}
				ids[len(ids)-1].Versions = append(ids[len(ids)-1].Versions, ver)
			}
			if output == "json" {
				if ids == nil {
					ids = []identityVersions{}
				}
				return json.NewEncoder(a.stdout).Encode(map[string]any{"identities": ids})
			}
			if len(ids) == 0 {
				_, err := fmt.Fprintln(a.stdout, "the vault is empty")
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tUSER\tVERSION\tACCESS KEY ID\tSTATE\tSINCE\tSECRET IN VAULT")
			for _, id := range ids {
				for _, ver := range id.Versions {
					held := "yes"
					if !ver.HasSecret {
						held = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", id.AccountID, id.UserName, ver.Number,
						ver.AccessKeyID, ver.State, ver.Since().Format(time.RFC3339), held)
				}
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (a *app) vaultRewrapCommand() *cobra.Command {
	var to config.MasterKey
	var output string
	cmd := &cobra.Command{
		Use:   "rewrap --to-source file|env|aws-kms [--to-file PATH | --to-env VAR | --to-kms-key-id ID]",
		Short: "Re-wrap every data key under a new key-encryption key, in one transaction, without touching the secrets",
		Long: `Re-wrap every data key under a new key-encryption key (KEK). The vault is opened with the
configured vault.master_key; the new KEK is named by the --to-* flags (a --to-file that does not
exist is created, 0600). All data keys are rewrapped in one transaction: all or none. Afterwards,
point vault.master_key at the new KEK; the old one can then be retired.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error { return a.rewrap(cmd.Context(), to, output) }),
	}
	cmd.Flags().StringVar(&to.Source, "to-source", "", "where the new key-encryption key comes from: file, env or aws-kms")
	cmd.Flags().StringVar(&to.File, "to-file", "", "new key file (created 0600 when missing)")
	cmd.Flags().StringVar(&to.Env, "to-env", "", "environment variable holding the new key (base64 of 32 bytes)")
	cmd.Flags().StringVar(&to.KMSKeyID, "to-kms-key-id", "", "AWS KMS key id, ARN or alias of the new key")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// rewrap checks the destination named, opens it, and rewraps every data key under it through the
// vault's service.
func (a *app) rewrap(ctx context.Context, to config.MasterKey, output string) error {
	if err := textOrJSON(output); err != nil {
		return err
	}
	switch to.Source {
	case config.KeySourceFile:
		if to.File == "" {
			return usageErr("--to-file is required with --to-source file")
		}
	case config.KeySourceEnv:
		if to.Env == "" {
			return usageErr("--to-env is required with --to-source env")
		}
	case config.KeySourceAWSKMS:
		if to.KMSKeyID == "" {
			return usageErr("--to-kms-key-id is required with --to-source aws-kms")
		}
	default:
		return usageErr("--to-source must be file, env or aws-kms (got %q)", to.Source)
	}
	if err := a.loadConfig(); err != nil {
		return err
	}
	if to.Source == config.KeySourceEnv {
		to.EnvValue = secret.New(lookupEnv(a.environ, to.Env))
	}
	if to.Source == config.KeySourceAWSKMS && a.cfg.AWS.Region == "" {
		return usageErr("aws.region must be set to rewrap under an AWS KMS key")
	}
	v, db, err := a.openVault(ctx, dbExisting)
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	next, err := a.openNewKEK(ctx, to)
	if err != nil {
		return err
	}
	var progress func(done, total int)
	if isTerminal(a.stderr) {
		var bar *progressbar.ProgressBar
		progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(a.stderr),
					progressbar.OptionSetDescription("rewrapping data keys"), progressbar.OptionShowCount(),
					progressbar.OptionClearOnFinish())
			}
			_ = bar.Set(done)
		}
	}
	from := v.KEKID()
	n, err := a.vaultAccess(v, db).Rewrap(ctx, cliActor(), next, progress)
	if err != nil {
		return err
	}
	a.log.Info("data keys rewrapped", "count", n, "from_kek_id", from, "to_kek_id", next.ID())
	if output == "json" {
		return json.NewEncoder(a.stdout).Encode(map[string]any{"rewrapped": n, "from_kek_id": from, "to_kek_id": next.ID()})
	}
	_, err = fmt.Fprintf(a.stdout, "rewrapped %d data keys from %s to %s\nnow set vault.master_key to the new key (source %s) before the next start\n",
		n, from, next.ID(), to.Source)
	return err
}

// openNewKEK opens the destination of a rewrap; a new key file is created and synced before any
// data key is wrapped under it.
func (a *app) openNewKEK(ctx context.Context, mk config.MasterKey) (vault.KEK, error) {
	if mk.Source == config.KeySourceFile {
		k, err := vault.ReadKeyFile(mk.File, a.log.Warn)
		if errors.Is(err, fs.ErrNotExist) {
			k, err = vault.CreateKeyFile(mk.File)
			if err == nil {
				a.log.Warn("created a new key-encryption key file: back it up, without it the vault cannot be read", "path", mk.File)
			}
		}
		return k, err
	}
	return a.openKEK(ctx, mk, nil)
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}
