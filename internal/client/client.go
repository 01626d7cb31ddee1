// Package client is a small client of Keyward's API for the machines that consume keys: it fetches a
// team's credentials over HTTPS (plain HTTP only to a loopback address), authenticated by an API key
// or a token that it never prints, and turns the server's problem documents into plain errors.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Client talks to one Keyward server.
type Client struct {
	base   *url.URL
	http   *http.Client
	apiKey secret.Value
	token  secret.Value
}

// Options configure a client. Exactly one of APIKey and Token is set.
type Options struct {
	Server string // https://keyward.internal, or http://127.0.0.1:8080 for a local demo
	APIKey secret.Value
	Token  secret.Value
	CAFile string // a PEM bundle of the private CA that signed the server's certificate
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
}

// New checks the options and returns a client. Errors name the option at fault and never hold a
// credential.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Server)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return nil, fmt.Errorf("--server %q: want https://HOST[:PORT]", o.Server)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return nil, fmt.Errorf("--server %q: plain http only to a loopback address (a local demo); use https", o.Server)
	}
	if o.APIKey.IsZero() == o.Token.IsZero() {
		return nil, errors.New("give an API key (--api-key-file or KEYWARD_API_KEY) or a token (--token-file), not both")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyFromEnvironment
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", o.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{base: u, http: &http.Client{Transport: tr, Timeout: o.Timeout}, apiKey: o.APIKey, token: o.Token}, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Credentials fetches a team's credentials: typ key or session, a session's duration ("" for the
// server's default), rendered by the server in format (credential-process, json, env or ini).
func (c *Client) Credentials(ctx context.Context, team, typ, duration, format string) ([]byte, error) {
	q := url.Values{"type": {typ}, "format": {format}}
	if duration != "" {
		q.Set("duration", duration)
	}
	return c.get(ctx, "/v1/teams/"+url.PathEscape(team)+"/credentials?"+q.Encode())
}

// get sends an authenticated GET and returns the body of a 200.
func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return nil, err
	}
	if !c.apiKey.IsZero() {
		req.Header.Set("X-API-Key", c.apiKey.Reveal())
	} else {
		req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its message is the URL and the cause; the URL holds no credential
			return nil, fmt.Errorf("keyward server %s: %w", c.base.Host, ue.Err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("keyward server %s: %w", c.base.Host, err)
	}
	if resp.StatusCode == http.StatusOK {
		return body, nil
	}
	return nil, problem(resp, body)
}

// problem turns an error answer into an error: the problem document's detail when there is one.
func problem(resp *http.Response, body []byte) error {
	msg := http.StatusText(resp.StatusCode)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		var p struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			msg = p.Detail
		}
	}
	err := fmt.Errorf("keyward answered %d: %s", resp.StatusCode, msg)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		err = fmt.Errorf("%w (retry after %ss)", err, ra)
	}
	return err
}
