package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/config"
)

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the configuration; exit 2 naming the key (and line) at fault",
		Args:  cobra.NoArgs,
		RunE: runE(func(*cobra.Command, []string) error {
			if err := a.loadConfig(); err != nil {
				return err
			}
			where := "defaults and environment"
			if a.configPath != "" {
				where = a.configPath
			} else if _, err := os.Stat(config.DefaultPath); err == nil {
				where = config.DefaultPath
			}
			for _, w := range a.cfg.Warnings() {
				fmt.Fprintf(a.stderr, "warning: %s\n", w)
			}
			_, err := fmt.Fprintf(a.stdout, "configuration OK (%s)\n", where)
			return err
		}),
	})
	return cmd
}
