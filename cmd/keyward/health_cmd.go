package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckCommand asks a running serve's /healthz: what a container's HEALTHCHECK runs, where the
// image has no shell and no curl (a distroless image).
func (a *app) healthcheckCommand() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the local serve answers /healthz, 1 otherwise (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: runE(func(*cobra.Command, []string) error {
			client := &http.Client{Timeout: 3 * time.Second}
			if url == "" {
				if err := a.loadConfig(); err != nil {
					return err
				}
				host, port, err := net.SplitHostPort(a.cfg.Server.Listen)
				if err != nil {
					return asUsage(fmt.Errorf("server.listen %q: %v", a.cfg.Server.Listen, err))
				}
				if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
					host = "127.0.0.1"
				}
				scheme := "http"
				if cert := a.cfg.Server.TLSCertFile; cert != "" {
					scheme = "https"
					// The server's own certificate is trusted besides the system's (a self-signed one).
					pool, err := x509.SystemCertPool()
					if err != nil {
						pool = x509.NewCertPool()
					}
					if pem, err := os.ReadFile(cert); err == nil {
						pool.AppendCertsFromPEM(pem)
					}
					client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}
				}
				url = scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
			}
			resp, err := client.Get(url)
			if err != nil {
				return fmt.Errorf("%s: %w", url, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", url, resp.Status)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&url, "url", "", "the health endpoint (default: /healthz on server.listen, on loopback)")
	return cmd
}
