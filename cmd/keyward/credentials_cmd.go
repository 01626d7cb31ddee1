package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/client"
	"github.com/keyward/keyward/internal/secret"
)

// credentialsFlags are keyward credentials' flags.
type credentialsFlags struct {
	server, apiKeyFile, tokenFile, caFile, typ, duration, output string
}

func (a *app) credentialsCommand() *cobra.Command {
	var f credentialsFlags
	cmd := &cobra.Command{
		Use:   "credentials TEAM --server URL (--api-key-file F | --token-file F) [--type session|key] [--duration D] [--output credential-process|json|env|ini]",
		Short: "Fetch a team's credentials from a running Keyward (for credential_process in ~/.aws/config)",
		Long: `credentials fetches a team's credentials from a running Keyward server and prints them, by default
as the document the AWS CLI and SDKs read from a credential_process:

  [profile payments]
  credential_process = keyward credentials payments --server https://keyward.internal --api-key-file /etc/keyward/ci.key

--type session (the default) gives short-lived credentials made with the team's key (STS
GetSessionToken), so the long-lived key never leaves Keyward; --type key gives the key itself. The API
key is read from --api-key-file or KEYWARD_API_KEY, a token from --token-file: never from a flag's
value, which other users could read in ps. Plain http is allowed to a loopback address only.
Needs no configuration file and no database. Errors go to stderr, exit 1.`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if !slices.Contains([]string{"session", "key"}, f.typ) {
				return usageErr("--type must be session or key (got %q)", f.typ)
			}
			if !slices.Contains([]string{"credential-process", "json", "env", "ini"}, f.output) {
				return usageErr("--output must be credential-process, json, env or ini (got %q)", f.output)
			}
			if f.duration != "" && f.typ != "session" {
				return usageErr("--duration is for --type session")
			}
			opts, err := a.clientOptions(f)
			if err != nil {
				return asUsage(err)
			}
			c, err := client.New(opts)
			if err != nil {
				return asUsage(err)
			}
			body, err := c.Credentials(cmd.Context(), args[0], f.typ, f.duration, f.output)
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(body)
			return err
		}),
	}
	cmd.Flags().StringVar(&f.server, "server", "", "the Keyward server's URL (https://…; http:// only to a loopback address)")
	cmd.Flags().StringVar(&f.apiKeyFile, "api-key-file", "", "a file holding the API key (or set KEYWARD_API_KEY)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "a file holding a token (from POST /v1/auth/token or a login)")
	cmd.Flags().StringVar(&f.caFile, "ca-file", "", "PEM certificates of a private CA that signed the server's certificate")
	cmd.Flags().StringVar(&f.typ, "type", "session", "session (short-lived, made with the team's key) or key (the long-lived key)")
	cmd.Flags().StringVar(&f.duration, "duration", "", "a session's life, 15m to 12h (default 1h)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "credential-process", "credential-process, json, env or ini")
	return cmd
}

// clientOptions reads the credential the client authenticates with from a file or the environment.
func (a *app) clientOptions(f credentialsFlags) (client.Options, error) {
	o := client.Options{Server: f.server, CAFile: f.caFile}
	if f.server == "" {
		return o, fmt.Errorf("--server is required")
	}
	read := func(flag, path string, valid func(string) bool, what string) (secret.Value, error) {
		path = a.expandHome(path)
		b, err := os.ReadFile(path)
		if err != nil {
			return secret.Value{}, fmt.Errorf("%s: %w", flag, err)
		}
		// The first line: a file written by `apikey create > ci.key` holds the key alone, and an
		// editor may have added a final newline.
		first, _, _ := strings.Cut(string(b), "\n")
		v := strings.TrimSpace(first)
		if v == "" {
			return secret.Value{}, fmt.Errorf("%s %s: the file's first line is empty", flag, path)
		}
		if !valid(v) {
			return secret.Value{}, fmt.Errorf("%s %s: the first line is not %s", flag, path, what)
		}
		return secret.New(v), nil
	}
	isAPIKey := func(v string) bool { return strings.HasPrefix(v, "kw_") && !strings.ContainsFunc(v, unprintable) }
	isToken := func(v string) bool { return strings.Count(v, ".") == 2 && !strings.ContainsFunc(v, unprintable) }
	o.CAFile = a.expandHome(o.CAFile)
	var err error
	switch {
	case f.apiKeyFile != "" && f.tokenFile != "":
		return o, fmt.Errorf("give --api-key-file or --token-file, not both")
	case f.apiKeyFile != "":
		o.APIKey, err = read("--api-key-file", f.apiKeyFile, isAPIKey, "an API key (kw_…, as keyward apikey create prints it)")
	case f.tokenFile != "":
		o.Token, err = read("--token-file", f.tokenFile, isToken, "a token (three dot-separated parts, as POST /v1/auth/token returns it)")
	default:
		for _, kv := range a.environ {
			if v, ok := strings.CutPrefix(kv, "KEYWARD_API_KEY="); ok && v != "" {
				o.APIKey = secret.New(v)
			}
		}
		if o.APIKey.IsZero() {
			err = fmt.Errorf("give --api-key-file, --token-file or KEYWARD_API_KEY")
		}
	}
	return o, err
}

// unprintable is a rune no key or token holds: space, control characters, anything past ASCII.
func unprintable(r rune) bool { return r <= ' ' || r > '~' }

// expandHome expands a leading ~ or ~/ to the home directory, as a shell would have: the page and
// the docs suggest paths such as ~/.keyward/ci.key, which a credential_process line does not expand.
func (a *app) expandHome(path string) string {
	if path != "~" && !strings.HasPrefix(path, "~/") {
		return path
	}
	home := ""
	for _, kv := range a.environ {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
	}
	if home == "" {
		return path
	}
	return filepath.Join(home, strings.TrimPrefix(path, "~"))
}
