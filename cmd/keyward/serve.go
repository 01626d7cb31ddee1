package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/httpapi"
)

func (a *app) serveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the Keyward service: migrate the database, then serve HTTP until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := a.loadConfig(); err != nil {
				return err
			}
			return a.serve(cmd.Context())
		}),
	}
}

func (a *app) serve(ctx context.Context) error {
	a.log.Info("configuration loaded", "vault_driver", a.cfg.Vault.Driver, "key_source", a.cfg.Vault.MasterKey.Source,
		"listen", a.cfg.Server.Listen)
	v, db, err := a.openVault(ctx, true)
	if err != nil {
		return err
	}
	defer closeQuietly(db)
	a.log.Info("vault open", "kek_id", v.KEKID())

	handler := httpapi.Handler(a.log, []httpapi.Check{{Name: "database", Func: db.Ready}})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	ln, err := net.Listen("tcp", a.cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (server.listen): %w", a.cfg.Server.Listen, err)
	}
	a.log.Info("listening", "addr", ln.Addr().String())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "timeout", a.cfg.Server.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.Std())
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	a.log.Info("stopped")
	return nil
}
