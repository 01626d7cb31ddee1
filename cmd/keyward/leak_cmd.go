package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/rotation"
)

func (a *app) leakCommand() *cobra.Command {
	var reason, output string
	var deactivateUnmanaged bool
	cmd := &cobra.Command{
		Use:   "leak KEY_ID [--reason TEXT] [--deactivate-unmanaged] [--output json]",
		Short: "Report a key as exposed: a key Keyward manages is replaced and deactivated at once",
		Long: `leak answers an exposed key (pushed to a public repository, pasted in a ticket). The report is
recorded and audited first and the key's owners and notify.security are told. A key Keyward manages
is replaced now if it is current (an emergency rotation, delivered to its targets as usual) and
deactivated at once, whether in use or not, then deleted after rotation.leak_delete_after (1h) — kept
for forensics. A key Keyward does not manage is found in IAM and named; it is deactivated only with
--deactivate-unmanaged. Exit 0 when the key no longer signs requests, 1 otherwise (saying why).`,
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if !rotation.ValidKeyID(args[0]) {
				return usageErr("%q is not an AWS access key id (AKIA… or ASIA…, 20 characters)", args[0])
			}
			ctx := cmd.Context()
			engine, db, err := a.existingEngine(ctx, output)
			if err != nil {
				return err
			}
			defer closeQuietly(db)
			resp, err := engine.RespondToLeak(ctx, rotation.LeakReport{KeyID: args[0], ReportedBy: cliActor(), Via: "cli", Reason: reason,
				DeactivateUnmanaged: deactivateUnmanaged})
			a.checkpoint(ctx, a.auditSigner(engine.Vault), db)
			a.deliverOnce(ctx, db, engine.Owner)
			if err != nil {
				if errors.Is(err, rotation.ErrBadKeyID) {
					return asUsage(err)
				}
				return fmt.Errorf("the leak of %s is recorded; the response did not finish (every pass tries again): %w", args[0], err)
			}
			if output == "json" {
				if err := json.NewEncoder(a.stdout).Encode(resp); err != nil {
					return err
				}
			} else {
				owner := "unknown owner"
				if resp.Identity != nil {
					owner = resp.Identity.String()
				}
				managed := "not managed by Keyward"
				if resp.Managed {
					managed = "managed by Keyward"
				}
				fmt.Fprintf(a.stdout, "%s… (%s, %s, was %s): %s\n", args[0][:8], owner, managed, resp.Was, resp.Next)
			}
			if !resp.Inactive {
				return fmt.Errorf("%s… still signs requests: %s", args[0][:8], resp.Next)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "where and how it was exposed (recorded and told)")
	cmd.Flags().BoolVar(&deactivateUnmanaged, "deactivate-unmanaged", false, "deactivate the key even when Keyward does not manage it")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
