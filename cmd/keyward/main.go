// Command keyward runs Keyward: the service (serve) and the operator commands around its vault.
// This file wires the parts together; the parts live in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/vault"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command could not do its work
	exitUsage   = 2 // bad input: flags, arguments, configuration; nothing was written
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if isLambdaBootstrap(os.Args) {
		args = []string{"lambda"}
	}
	code := run(ctx, args, os.Stdin, os.Stdout, os.Stderr, os.Environ())
	stop()
	os.Exit(code)
}

// exitError carries the exit code a command's error should end the process with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr reports bad input: exit 2.
func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// accountFlag checks an --account flag: empty (every account) or a 12-digit AWS account id.
func accountFlag(account string) error {
	if account == "" {
		return nil
	}
	if err := vault.ValidateAccountID(account); err != nil {
		return usageErr("--account: %v", err)
	}
	return nil
}

// asUsage marks err as bad input.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitUsage, err: err}
}

// app holds what every command shares: the process's streams and environment, global flags, and
// what was loaded from them.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	environ        []string
	serving        bool // serve runs: the simulated cloud is this process's

	configPath string
	logFormat  string

	cfg *config.Config
	log *slog.Logger
	// demoSetup, when set, runs once serve's parts are built: the demo's people.
	demoSetup      func(ctx context.Context, c *components) error
	demoConfigPath string
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, environ []string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, environ: environ}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "keyward: "+err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Errors that did not come through a command's RunE are cobra's: unknown command or flag,
	// wrong number of arguments.
	return exitUsage
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "keyward",
		Short:         "Keyward rotates long-lived cloud access keys and keeps them in an encrypted vault",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "", "configuration file (default ./"+config.DefaultPath+" when present)")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "", "log format: json or text (default from log.format)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return asUsage(err) })
	root.AddCommand(
		a.versionCommand(),
		a.configCommand(),
		a.migrateCommand(),
		a.serveCommand(),
		a.healthcheckCommand(),
		a.lambdaCommand(),
		a.vaultCommand(),
		a.rotateCommand(),
		a.statusCommand(),
		a.deliverCommand(),
		a.credentialsCommand(),
		a.demoCommand(),
		a.leakCommand(),
		a.scanCommand(),
		a.inventoryCommand(),
		a.reportCommand(),
		a.remediateCommand(),
		a.auditCommand(),
		a.userCommand(),
		a.teamCommand(),
		a.apikeyCommand(),
	)
	return root
}

// runE adapts a command body: errors not already marked as bad input end the process with exit 1.
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return &exitError{code: exitFailure, err: err}
	}
}

// textOrJSON checks an --output flag of the commands that print either.
func textOrJSON(output string) error {
	if output != "text" && output != "json" {
		return usageErr("--output must be text or json (got %q)", output)
	}
	return nil
}

// loadConfig reads the configuration and sets up logging; an invalid configuration is bad input.
func (a *app) loadConfig() error {
	src := config.Source{Path: a.configPath, Environ: a.environ, Explicit: a.configPath != ""}
	if src.Path == "" {
		src.Path = config.DefaultPath
	}
	cfg, err := config.Load(src)
	if err != nil {
		return asUsage(err)
	}
	if a.logFormat != "" {
		if a.logFormat != "json" && a.logFormat != "text" {
			return usageErr("--log-format must be json or text (got %q)", a.logFormat)
		}
		cfg.Log.Format = a.logFormat
	}
	a.cfg = cfg
	a.log = newLogger(a.stderr, cfg.Log)
	return nil
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
