// Package github delivers keys to GitHub Actions secrets — a repository's, an environment's or an
// organisation's — through GitHub's REST API (version 2022-11-28), as GitHub documents it in "REST
// API endpoints for GitHub Actions secrets": read the scope's public key, seal each value with
// libsodium's sealed box (x/crypto's nacl/box.SealAnonymous), and PUT it with that key's id.
//
// A secret has no versions and GitHub never returns its value: Stage checks that the scope can be
// written (the token is accepted, the repository, environment or organisation exists and the token
// may write its secrets) without writing; Publish writes; Withdraw writes the old key back; Current
// reads only the secrets' updated_at, and `deliver --check` judges the rest from Keyward's own
// delivery record.
//
// Two secrets (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) cannot be written at once: the id is
// written last, so that a workflow that starts between the two writes sees the old id with the new
// secret, fails at its first AWS call and succeeds when run again — the old key is still active
// then, and stays so until both are written. names.json writes both halves in one secret, in one
// request: a workflow never sees half a key.
package github

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/nacl/box"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// APIVersion is the REST API version Keyward speaks.
const APIVersion = "2022-11-28"

// Destination writes github_actions targets.
type Destination struct {
	Log    *slog.Logger
	Client *http.Client
	Now    func() time.Time

	mu     sync.Mutex
	tokens map[string]appToken // installation tokens, by base URL, App, installation and key file
}

type appToken struct {
	token   secret.Value
	expires time.Time
}

var _ delivery.Destination = (*Destination)(nil)

// New returns a destination with a 30-second timeout per request.
func New(log *slog.Logger) *Destination {
	return &Destination{Log: log, Client: &http.Client{Timeout: 30 * time.Second}, Now: time.Now, tokens: map[string]appToken{}}
}

// scope is where the secrets of one target live.
type scope struct {
	spec delivery.Spec
	g    *delivery.GitHubTarget
}

// root is the scope's path: /repos/O/R, /repos/O/R/environments/E or /orgs/O.
func (s scope) root() string {
	switch {
	case s.g.Organization != "":
		return "/orgs/" + url.PathEscape(s.g.Organization)
	case s.g.Environment != "":
		return "/repos/" + s.g.Repository + "/environments/" + url.PathEscape(s.g.Environment)
	}
	return "/repos/" + s.g.Repository
}

// secrets is the scope's secrets collection.
func (s scope) secrets() string {
	if s.g.Environment != "" && s.g.Organization == "" {
		return s.root() + "/secrets"
	}
	return s.root() + "/actions/secrets"
}

// permission names what the token must be allowed, for messages.
func (s scope) permission() string {
	switch {
	case s.g.Organization != "":
		return `the organisation permission "Secrets: read and write" (a classic token: admin:org)`
	case s.g.Environment != "":
		return `the repository permission "Environments: read and write" on ` + s.g.Repository + ` (a classic token: repo)`
	}
	return `the repository permission "Secrets: read and write" on ` + s.g.Repository + ` (a classic token: repo)`
}

// Stage implements delivery.Destination: the scope's public key can be read (the token is good and
// may use the scope), the environment exists, and selected repositories exist.
func (d *Destination) Stage(ctx context.Context, s delivery.Spec, _ delivery.Payload) error {
	sc := scope{s, s.GitHub}
	if sc.g.Environment != "" {
		if err := d.call(ctx, sc, http.MethodGet, "/repos/"+sc.g.Repository+"/environments/"+url.PathEscape(sc.g.Environment), nil, nil); err != nil {
			return err
		}
	}
	if _, err := d.selectedIDs(ctx, sc); err != nil {
		return err
	}
	_, err := d.publicKey(ctx, sc)
	return err
}

// Publish implements delivery.Destination: the key is written, its id last (see the package's
// comment).
func (d *Destination) Publish(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	return d.write(ctx, scope{s, s.GitHub}, p)
}

// Withdraw implements delivery.Destination: the old key is written back; without it (secrets first
// written by this rotation) they are left as they are.
func (d *Destination) Withdraw(ctx context.Context, s delivery.Spec, _ delivery.Payload, old *delivery.Payload) error {
	if old == nil {
		return nil
	}
	return d.write(ctx, scope{s, s.GitHub}, *old)
}

// Current implements delivery.Destination: GitHub never returns a secret's value, so only when the
// secrets were last written is read (the later of the two; Missing when one is not there).
func (d *Destination) Current(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	sc := scope{s, s.GitHub}
	held := delivery.Held{Unreadable: "GitHub never returns a secret's value"}
	for _, name := range names(sc.g.Names) {
		var meta struct {
			UpdatedAt time.Time `json:"updated_at"`
		}
		err := d.call(ctx, sc, http.MethodGet, sc.secrets()+"/"+name, nil, &meta)
		var he *delivery.RefusedError
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			held.Missing, held.UpdatedAt = true, time.Time{}
			return held, nil
		}
		if err != nil {
			return delivery.Held{}, err
		}
		if meta.UpdatedAt.After(held.UpdatedAt) {
			held.UpdatedAt = meta.UpdatedAt
		}
	}
	return held, nil
}

// Forget implements delivery.Destination: a secret has no label to take off.
func (d *Destination) Forget(context.Context, delivery.Spec, string) error { return nil }

// names lists the secrets written, in the order they are written: the secret before the id.
func names(n delivery.SecretNames) []string {
	if n.JSON != "" {
		return []string{n.JSON}
	}
	return []string{n.SecretAccessKey, n.AccessKeyID}
}

func (d *Destination) write(ctx context.Context, sc scope, p delivery.Payload) error {
	key, err := d.publicKey(ctx, sc)
	if err != nil {
		return err
	}
	ids, err := d.selectedIDs(ctx, sc)
	if err != nil {
		return err
	}
	values := map[string]secret.Value{sc.g.Names.AccessKeyID: secret.New(p.KeyID), sc.g.Names.SecretAccessKey: p.Secret}
	if sc.g.Names.JSON != "" {
		values = map[string]secret.Value{sc.g.Names.JSON: delivery.JSON.Render(p.KeyID, p.Secret)}
	}
	for _, name := range names(sc.g.Names) {
		sealed, err := box.SealAnonymous(nil, []byte(values[name].Reveal()), &key.key, rand.Reader)
		if err != nil {
			return fmt.Errorf("seal %s for %s: %w", name, sc.spec.Key(), err)
		}
		body := map[string]any{"encrypted_value": base64.StdEncoding.EncodeToString(sealed), "key_id": key.id}
		if sc.g.Organization != "" {
			body["visibility"] = visibility(sc.g)
			if ids != nil {
				body["selected_repository_ids"] = ids
			}
		}
		if err := d.call(ctx, sc, http.MethodPut, sc.secrets()+"/"+name, body, nil); err != nil {
			return err
		}
	}
	return nil
}

func visibility(g *delivery.GitHubTarget) string {
	if g.Visibility == "" {
		return "private"
	}
	return g.Visibility
}

type publicKey struct {
	id  string
	key [32]byte
}

// publicKey reads the scope's public key. It is read before each write: GitHub may change it.
func (d *Destination) publicKey(ctx context.Context, sc scope) (publicKey, error) {
	var got struct {
		KeyID string `json:"key_id"`
		Key   string `json:"key"`
	}
	if err := d.call(ctx, sc, http.MethodGet, sc.secrets()+"/public-key", nil, &got); err != nil {
		return publicKey{}, err
	}
	raw, err := base64.StdEncoding.DecodeString(got.Key)
	if err != nil || len(raw) != 32 || got.KeyID == "" {
		return publicKey{}, fmt.Errorf("%s: GitHub's public key is not 32 bytes of base64 with a key_id", sc.spec.Key())
	}
	k := publicKey{id: got.KeyID}
	copy(k.key[:], raw)
	return k, nil
}

// selectedIDs are the ids of an organisation secret's selected repositories (nil for any other).
func (d *Destination) selectedIDs(ctx context.Context, sc scope) ([]int64, error) {
	if sc.g.Organization == "" || sc.g.Visibility != "selected" {
		return nil, nil
	}
	ids := make([]int64, 0, len(sc.g.SelectedRepositories))
	for _, r := range sc.g.SelectedRepositories {
		var repo struct {
			ID int64 `json:"id"`
		}
		if err := d.call(ctx, scope{sc.spec, &delivery.GitHubTarget{Repository: r, BaseURL: sc.g.BaseURL, Auth: sc.g.Auth}},
			http.MethodGet, "/repos/"+r, nil, &repo); err != nil {
			return nil, err
		}
		ids = append(ids, repo.ID)
	}
	return ids, nil
}

// call sends one request and decodes the answer into out (when not nil).
func (d *Destination) call(ctx context.Context, sc scope, method, path string, body, out any) error {
	token, err := d.token(ctx, sc)
	if err != nil {
		return fmt.Errorf("%s: %w", sc.spec.Key(), err)
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(sc.g.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", sc.spec.Key(), err)
	}
	setHeaders(req, "Bearer "+token.Reveal())
	resp, err := d.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", sc.spec.Key(), method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return d.refusal(sc, method, path, resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: %s %s: GitHub's answer is not the JSON documented: %w", sc.spec.Key(), method, path, err)
		}
	}
	return nil
}

func setHeaders(req *http.Request, auth string) {
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", APIVersion)
	req.Header.Set("User-Agent", "keyward")
	req.Header.Set("Authorization", auth)
	if req.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
}

// refusal turns an answer of 300 or more into a RefusedError that says what is missing.
func (d *Destination) refusal(sc scope, method, path string, resp *http.Response, raw []byte) error {
	var msg struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(raw, &msg)
	e := &delivery.RefusedError{Service: "GitHub", Target: sc.spec.Key(), Method: method, Path: path, Status: resp.StatusCode, Message: msg.Message}
	if wait, limited := rateLimited(resp, d.Now()); limited {
		e.Wait = wait
		e.Hint = fmt.Sprintf("rate limited; trying again in %s", wait.Round(time.Second))
		return e
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Hint = "the token was refused: check token_file or token_env (or the App's private key), and that it has not expired"
	case http.StatusForbidden:
		e.Hint = "the token may not do this: it needs " + sc.permission()
	case http.StatusNotFound:
		e.Hint = fmt.Sprintf("%s does not exist, was renamed, or the token cannot see it (it needs %s)", what(sc, path), sc.permission())
	case http.StatusUnprocessableEntity:
		e.Hint = "GitHub refused the request's content"
	default:
		if resp.StatusCode >= 500 {
			e.Hint = "GitHub is failing; trying again"
		}
	}
	return e
}

// what names what a path is about, for a 404.
func what(sc scope, path string) string {
	switch {
	case strings.HasPrefix(path, "/orgs/"):
		return "the organisation " + sc.g.Organization
	case strings.Contains(path, "/environments/"):
		return "the environment " + sc.g.Environment + " of " + sc.g.Repository
	}
	return "the repository " + strings.TrimPrefix(strings.SplitN(path+"/actions", "/actions", 2)[0], "/repos/")
}

// rateLimited reads GitHub's rate-limit headers: retry-after (secondary limits), or a remaining
// count of 0 with the reset time (primary). It is a rate limit only on 403 or 429.
func rateLimited(resp *http.Response, now time.Time) (time.Duration, bool) {
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			return time.Duration(n) * time.Second, true
		}
	}
	if resp.Header.Get("X-Ratelimit-Remaining") == "0" {
		if reset, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Reset"), 10, 64); err == nil {
			return max(time.Unix(reset, 0).Sub(now), time.Second), true
		}
		return time.Minute, true
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return time.Minute, true
	}
	return 0, false
}

// token is the token to send: the file's (read at each use, so that a replaced file is used), the
// environment's, or a GitHub App installation's, made and cached until five minutes before it
// expires.
func (d *Destination) token(ctx context.Context, sc scope) (secret.Value, error) {
	a := sc.g.Auth
	switch {
	case a.TokenFile != "":
		return delivery.TokenFromFile(a.TokenFile)
	case !a.Token.IsZero():
		return a.Token, nil
	}
	return d.installationToken(ctx, sc)
}

func (d *Destination) installationToken(ctx context.Context, sc scope) (secret.Value, error) {
	a := sc.g.Auth
	cacheKey := fmt.Sprintf("%s|%d|%d|%s", sc.g.BaseURL, a.AppID, a.InstallationID, a.PrivateKeyFile)
	d.mu.Lock()
	cached, ok := d.tokens[cacheKey]
	d.mu.Unlock()
	now := d.Now()
	if ok && now.Before(cached.expires.Add(-5*time.Minute)) {
		return cached.token, nil
	}
	pem, err := os.ReadFile(a.PrivateKeyFile)
	if err != nil {
		return secret.Value{}, fmt.Errorf("read the GitHub App's private_key_file: %w", err)
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pem)
	if err != nil {
		return secret.Value{}, fmt.Errorf("the GitHub App's private_key_file %s is not an RSA private key in PEM", a.PrivateKeyFile)
	}
	// As GitHub documents "Generating a JSON Web Token (JWT) for a GitHub App": RS256, issued 60 s in
	// the past against clock drift, expiring within 10 minutes, issued by the App.
	appJWT, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iat": now.Add(-60 * time.Second).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": strconv.FormatInt(a.AppID, 10),
	}).SignedString(key)
	if err != nil {
		return secret.Value{}, fmt.Errorf("sign the GitHub App's JWT: %w", err)
	}
	path := fmt.Sprintf("/app/installations/%d/access_tokens", a.InstallationID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(sc.g.BaseURL, "/")+path, nil)
	if err != nil {
		return secret.Value{}, err
	}
	setHeaders(req, "Bearer "+appJWT)
	resp, err := d.Client.Do(req)
	if err != nil {
		return secret.Value{}, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		e := d.refusal(sc, http.MethodPost, path, resp, raw).(*delivery.RefusedError)
		if e.Wait == 0 {
			e.Hint = fmt.Sprintf("GitHub would not make a token for installation %d of App %d: check app_id, installation_id and private_key_file", a.InstallationID, a.AppID)
		}
		return secret.Value{}, e
	}
	var got struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(raw, &got); err != nil || got.Token == "" {
		return secret.Value{}, fmt.Errorf("POST %s: GitHub's answer has no token", path)
	}
	t := appToken{token: secret.New(got.Token), expires: got.ExpiresAt}
	d.mu.Lock()
	d.tokens[cacheKey] = t
	d.mu.Unlock()
	return t.token, nil
}
