package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Stamped by the build: go build -ldflags "-X main.version=v0.1.0 -X main.commit=$(git rev-parse HEAD)".
var (
	version = "dev"
	commit  = ""
)

func (a *app) versionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print Keyward's version",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			info := map[string]string{"version": version, "commit": commit, "go": runtime.Version()}
			if info["commit"] == "" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							info["commit"] = s.Value
						}
					}
				}
			}
			if err := textOrJSON(output); err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(a.stdout).Encode(info)
			}
			_, err := fmt.Fprintf(a.stdout, "keyward %s (commit %s, %s)\n", info["version"], orNone(info["commit"]), info["go"])
			return err
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
