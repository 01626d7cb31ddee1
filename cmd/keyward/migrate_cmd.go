package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/store"
)

func (a *app) migrateCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database migrations this Keyward needs (safe to run from several processes at once)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := textOrJSON(output); err != nil {
				return err
			}
			if err := a.loadConfig(); err != nil {
				return err
			}
			ctx := cmd.Context()
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
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
