package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/nacl/box"
)

// GitHub is a test server for the part of GitHub's REST API that Keyward uses, written from GitHub's
// documentation as read on 2026-12-08 (API version 2022-11-28), so that Keyward's client is tested
// against the protocol and not against a mock of itself:
//
//   - "REST API endpoints for GitHub Actions secrets" (docs.github.com/en/rest/actions/secrets):
//     GET …/secrets/public-key, GET …/secrets (paginated), GET/PUT …/secrets/{secret_name} for a
//     repository (/repos/{owner}/{repo}/actions/secrets), an environment
//     (/repos/{owner}/{repo}/environments/{environment_name}/secrets) and an organisation
//     (/orgs/{org}/actions/secrets, with visibility and selected_repository_ids). PUT answers 201
//     when it creates a secret and 204 when it updates one; the value must be sealed (libsodium
//     sealed box) with the scope's current public key, whose key_id it names. Every sealed value
//     is opened here with the scope's private key, so a test reads what Keyward wrote.
//   - "Naming your secrets" (docs.github.com/en/actions/security-guides/using-secrets-in-github-actions):
//     letters, digits and underscores, not starting with a digit or GITHUB_.
//   - "REST API endpoints for repositories" and "for deployment environments": GET
//     /repos/{owner}/{repo} and GET /repos/{owner}/{repo}/environments/{environment_name}.
//   - "Authenticating as a GitHub App installation" and "Generating a JSON Web Token (JWT) for a
//     GitHub App": POST /app/installations/{installation_id}/access_tokens with an RS256 JWT whose
//     iss is the App's id and whose exp is at most 10 minutes after iat; 201 {token, expires_at}.
//   - "Rate limits for the REST API": x-ratelimit-limit, -remaining, -used, -reset and -resource
//     on every answer; a primary limit is 403 (or 429) with x-ratelimit-remaining 0; a secondary
//     one carries retry-after.
//   - "Using pagination in the REST API": per_page (default 30, at most 100), page, and a Link
//     header with rel="next" and rel="last".
//   - "Troubleshooting the REST API": 401 {"message": "Bad credentials"}, 403 "Resource not
//     accessible by personal access token", 404 {"message": "Not Found"} for what a token cannot
//     see, 422 for content GitHub will not take.
type GitHub struct {
	URL string

	mu       sync.Mutex
	repos    map[string]int64 // owner/name → id
	envs     map[string]bool  // owner/name/environment
	orgs     map[string]bool
	tokens   map[string]GitHubToken
	keys     map[string]*ghKey // scope root → its key pair
	secrets  map[string]map[string]*GitHubSecret
	apps     map[int64]ghApp // installation id → the App and what it may do
	fail     []ghFailure
	Requests []string // "METHOD path", in order
}

// GitHubToken is what a token may do: the scope roots it sees (repos/OWNER/NAME, orgs/ORG; "*" for
// all) and whether it may write their secrets.
type GitHubToken struct {
	Sees  []string
	Write bool
}

// GitHubSecret is one secret as the server holds it, its value opened.
type GitHubSecret struct {
	Value       string
	Created     time.Time
	Updated     time.Time
	Visibility  string
	SelectedIDs []int64
}

type ghKey struct {
	id       string
	pub, prv *[32]byte
}

type ghApp struct {
	id    int64
	key   *rsa.PublicKey
	token GitHubToken
}

type ghFailure struct {
	status  int
	headers map[string]string
	message string
}

// NewGitHub starts the server for the test.
func NewGitHub(t testing.TB) *GitHub {
	t.Helper()
	g := &GitHub{repos: map[string]int64{}, envs: map[string]bool{}, orgs: map[string]bool{}, tokens: map[string]GitHubToken{},
		keys: map[string]*ghKey{}, secrets: map[string]map[string]*GitHubSecret{}, apps: map[int64]ghApp{}}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// AddRepo makes a repository (with environments); its id is returned.
func (g *GitHub) AddRepo(fullName string, environments ...string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := int64(1000 + len(g.repos))
	g.repos[fullName] = id
	for _, e := range environments {
		g.envs[fullName+"/"+e] = true
	}
	return id
}

// RenameRepo renames a repository: its old name is not found any more.
func (g *GitHub) RenameRepo(from, to string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.repos[to] = g.repos[from]
	delete(g.repos, from)
}

// AddOrg makes an organisation.
func (g *GitHub) AddOrg(org string) { g.mu.Lock(); g.orgs[org] = true; g.mu.Unlock() }

// AddToken makes a token.
func (g *GitHub) AddToken(token string, t GitHubToken) {
	g.mu.Lock()
	g.tokens[token] = t
	g.mu.Unlock()
}

// AddApp installs an App: a key pair is made, its private key returned in PEM.
func (g *GitHub) AddApp(t testing.TB, appID, installationID int64, may GitHubToken) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.apps[installationID] = ghApp{id: appID, key: &key.PublicKey, token: may}
	g.mu.Unlock()
	return pemRSA(key)
}

// RotateKey gives a scope a new public key, as GitHub may.
func (g *GitHub) RotateKey(root string) { g.mu.Lock(); delete(g.keys, root); g.mu.Unlock() }

// Secret returns a secret of a scope root (repos/O/R, repos/O/R/environments/E, orgs/O).
func (g *GitHub) Secret(root, name string) (GitHubSecret, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.secrets[root][name]
	if !ok {
		return GitHubSecret{}, false
	}
	return *s, true
}

// SetSecret writes a secret as someone else would (not through the API).
func (g *GitHub) SetSecret(root, name, value string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.secrets[root] == nil {
		g.secrets[root] = map[string]*GitHubSecret{}
	}
	g.secrets[root][name] = &GitHubSecret{Value: value, Created: at, Updated: at}
}

// FailNext makes the next n requests fail with status, headers and message.
func (g *GitHub) FailNext(n, status int, message string, headers map[string]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.fail = append(g.fail, ghFailure{status, headers, message})
	}
}

// Count counts the requests whose "METHOD path" starts with prefix.
func (g *GitHub) Count(prefix string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, r := range g.Requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

const ghDocs = "https://docs.github.com/rest"

var (
	ghSecretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	ghRoutes     = []struct {
		method string
		re     *regexp.Regexp
		serve  func(g *GitHub, w http.ResponseWriter, r *http.Request, m []string, tok GitHubToken)
	}{
		{"GET", regexp.MustCompile(`^/repos/([^/]+/[^/]+)$`), (*GitHub).getRepo},
		{"GET", regexp.MustCompile(`^/repos/([^/]+/[^/]+)/environments/([^/]+)$`), (*GitHub).getEnvironment},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/secrets/public-key$`), (*GitHub).getPublicKey},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+/environments/[^/]+)/secrets/public-key$`), (*GitHub).getPublicKey},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/secrets$`), (*GitHub).listSecrets},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+/environments/[^/]+)/secrets$`), (*GitHub).listSecrets},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/secrets/([^/]+)$`), (*GitHub).getSecret},
		{"GET", regexp.MustCompile(`^/(repos/[^/]+/[^/]+/environments/[^/]+)/secrets/([^/]+)$`), (*GitHub).getSecret},
		{"PUT", regexp.MustCompile(`^/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/secrets/([^/]+)$`), (*GitHub).putSecret},
		{"PUT", regexp.MustCompile(`^/(repos/[^/]+/[^/]+/environments/[^/]+)/secrets/([^/]+)$`), (*GitHub).putSecret},
	}
	ghInstallationToken = regexp.MustCompile(`^/app/installations/(\d+)/access_tokens$`)
)

func (g *GitHub) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Requests = append(g.Requests, r.Method+" "+r.URL.Path)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Ratelimit-Limit", "5000")
	h.Set("X-Ratelimit-Remaining", "4999")
	h.Set("X-Ratelimit-Used", "1")
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	h.Set("X-Ratelimit-Resource", "core")
	if v := r.Header.Get("X-GitHub-Api-Version"); v != "" && v != "2022-11-28" && v != "2026-03-10" {
		ghError(w, http.StatusBadRequest, "Unsupported 'X-GitHub-Api-Version': "+v)
		return
	}
	if r.Header.Get("User-Agent") == "" {
		ghError(w, http.StatusForbidden, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header")
		return
	}
	if len(g.fail) > 0 {
		f := g.fail[0]
		g.fail = g.fail[1:]
		for k, v := range f.headers {
			h.Set(k, v)
		}
		ghError(w, f.status, f.message)
		return
	}
	if m := ghInstallationToken.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodPost {
		g.installationToken(w, r, m)
		return
	}
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		auth, ok = strings.CutPrefix(r.Header.Get("Authorization"), "token ")
	}
	tok, known := g.tokens[auth]
	if !ok || !known {
		ghError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	for _, route := range ghRoutes {
		if m := route.re.FindStringSubmatch(r.URL.Path); m != nil && route.method == r.Method {
			route.serve(g, w, r, m, tok)
			return
		}
	}
	ghError(w, http.StatusNotFound, "Not Found")
}

func ghError(w http.ResponseWriter, status int, message string) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": message, "documentation_url": ghDocs, "status": strconv.Itoa(status)})
}

func ghJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// scopeOK says whether the scope root exists and the token sees it; it answers 404 when not (as
// GitHub does for what a token cannot see) and 403 when the token sees it but may not write.
func (g *GitHub) scopeOK(w http.ResponseWriter, root string, tok GitHubToken, write bool) bool {
	repo, env := "", ""
	switch parts := strings.Split(root, "/"); {
	case parts[0] == "orgs":
		if !g.orgs[parts[1]] {
			ghError(w, http.StatusNotFound, "Not Found")
			return false
		}
	default:
		repo = parts[1] + "/" + parts[2]
		if len(parts) == 5 {
			env = parts[4]
		}
		if _, ok := g.repos[repo]; !ok {
			ghError(w, http.StatusNotFound, "Not Found")
			return false
		}
		if env != "" && !g.envs[repo+"/"+env] {
			ghError(w, http.StatusNotFound, "Not Found")
			return false
		}
	}
	base := root
	if repo != "" {
		base = "repos/" + repo
	}
	if !slices.Contains(tok.Sees, "*") && !slices.Contains(tok.Sees, base) {
		ghError(w, http.StatusNotFound, "Not Found")
		return false
	}
	if write && !tok.Write {
		ghError(w, http.StatusForbidden, "Resource not accessible by personal access token")
		return false
	}
	return true
}

func (g *GitHub) getRepo(w http.ResponseWriter, _ *http.Request, m []string, tok GitHubToken) {
	id, ok := g.repos[m[1]]
	if !ok || (!slices.Contains(tok.Sees, "*") && !slices.Contains(tok.Sees, "repos/"+m[1]) && !slices.Contains(tok.Sees, "orgs/"+strings.Split(m[1], "/")[0])) {
		ghError(w, http.StatusNotFound, "Not Found")
		return
	}
	ghJSON(w, http.StatusOK, map[string]any{"id": id, "name": strings.Split(m[1], "/")[1], "full_name": m[1]})
}

func (g *GitHub) getEnvironment(w http.ResponseWriter, _ *http.Request, m []string, tok GitHubToken) {
	if !g.scopeOK(w, "repos/"+m[1]+"/environments/"+m[2], tok, false) {
		return
	}
	ghJSON(w, http.StatusOK, map[string]any{"id": 1, "name": m[2]})
}

func (g *GitHub) key(root string) *ghKey {
	k := g.keys[root]
	if k == nil {
		pub, prv, _ := box.GenerateKey(rand.Reader)
		k = &ghKey{id: strconv.FormatInt(time.Now().UnixNano()%1e12, 10), pub: pub, prv: prv}
		g.keys[root] = k
	}
	return k
}

func (g *GitHub) getPublicKey(w http.ResponseWriter, _ *http.Request, m []string, tok GitHubToken) {
	if !g.scopeOK(w, m[1], tok, false) {
		return
	}
	k := g.key(m[1])
	ghJSON(w, http.StatusOK, map[string]string{"key_id": k.id, "key": base64.StdEncoding.EncodeToString(k.pub[:])})
}

func (g *GitHub) secretJSON(root, name string, s *GitHubSecret) map[string]any {
	out := map[string]any{"name": name, "created_at": s.Created.UTC().Format(time.RFC3339), "updated_at": s.Updated.UTC().Format(time.RFC3339)}
	if strings.HasPrefix(root, "orgs/") {
		out["visibility"] = s.Visibility
		if s.Visibility == "selected" {
			out["selected_repositories_url"] = g.URL + "/" + root + "/actions/secrets/" + name + "/repositories"
		}
	}
	return out
}

func (g *GitHub) getSecret(w http.ResponseWriter, _ *http.Request, m []string, tok GitHubToken) {
	if !g.scopeOK(w, m[1], tok, false) {
		return
	}
	s, ok := g.secrets[m[1]][m[2]]
	if !ok {
		ghError(w, http.StatusNotFound, "Not Found")
		return
	}
	ghJSON(w, http.StatusOK, g.secretJSON(m[1], m[2], s))
}

func (g *GitHub) listSecrets(w http.ResponseWriter, r *http.Request, m []string, tok GitHubToken) {
	if !g.scopeOK(w, m[1], tok, false) {
		return
	}
	perPage, page := 30, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	names := make([]string, 0, len(g.secrets[m[1]]))
	for n := range g.secrets[m[1]] {
		names = append(names, n)
	}
	slices.Sort(names)
	last := max(1, (len(names)+perPage-1)/perPage)
	list := []map[string]any{}
	for i := (page - 1) * perPage; i < min(page*perPage, len(names)); i++ {
		list = append(list, g.secretJSON(m[1], names[i], g.secrets[m[1]][names[i]]))
	}
	link := func(p int, rel string) string {
		return fmt.Sprintf(`<%s%s?per_page=%d&page=%d>; rel="%s"`, g.URL, r.URL.Path, perPage, p, rel)
	}
	var links []string
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(page-1, "prev"), link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	ghJSON(w, http.StatusOK, map[string]any{"total_count": len(names), "secrets": list})
}

func (g *GitHub) putSecret(w http.ResponseWriter, r *http.Request, m []string, tok GitHubToken) {
	if !g.scopeOK(w, m[1], tok, true) {
		return
	}
	name := m[2]
	if !ghSecretName.MatchString(name) || strings.HasPrefix(strings.ToUpper(name), "GITHUB_") {
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nSecret names can only contain alphanumeric characters ([a-z], [A-Z], [0-9]) or underscores (_), must not start with a number or GITHUB_.")
		return
	}
	var body struct {
		EncryptedValue        string  `json:"encrypted_value"`
		KeyID                 string  `json:"key_id"`
		Visibility            string  `json:"visibility"`
		SelectedRepositoryIDs []int64 `json:"selected_repository_ids"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		ghError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	org := strings.HasPrefix(m[1], "orgs/")
	switch {
	case body.EncryptedValue == "" || body.KeyID == "":
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"encrypted_value\" and \"key_id\" are required.")
		return
	case org && !slices.Contains([]string{"all", "private", "selected"}, body.Visibility):
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"visibility\" wasn't supplied.")
		return
	case org && (body.Visibility == "selected") != (len(body.SelectedRepositoryIDs) > 0):
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"selected_repository_ids\" goes with visibility selected.")
		return
	}
	k := g.key(m[1])
	sealed, err := base64.StdEncoding.DecodeString(body.EncryptedValue)
	if body.KeyID != k.id || err != nil {
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nBad key_id or encrypted_value.")
		return
	}
	plain, ok := box.OpenAnonymous(nil, sealed, k.pub, k.prv)
	if !ok {
		ghError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nThe value could not be decrypted with the key of key_id.")
		return
	}
	now := time.Now().UTC()
	if g.secrets[m[1]] == nil {
		g.secrets[m[1]] = map[string]*GitHubSecret{}
	}
	s, exists := g.secrets[m[1]][name]
	if !exists {
		s = &GitHubSecret{Created: now}
		g.secrets[m[1]][name] = s
	}
	s.Value, s.Updated, s.Visibility, s.SelectedIDs = string(plain), now, body.Visibility, body.SelectedRepositoryIDs
	if exists {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ghJSON(w, http.StatusCreated, map[string]any{})
}

// installationToken checks the App's JWT (RS256, iss the App's id, exp at most 10 minutes after
// iat) and makes an installation token of an hour.
func (g *GitHub) installationToken(w http.ResponseWriter, r *http.Request, m []string) {
	id, _ := strconv.ParseInt(m[1], 10, 64)
	app, ok := g.apps[id]
	if !ok {
		ghError(w, http.StatusNotFound, "Not Found")
		return
	}
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return app.key, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuedAt())
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if err != nil || fmt.Sprint(claims["iss"]) != strconv.FormatInt(app.id, 10) || iat == nil || exp == nil || exp.Sub(iat.Time) > 10*time.Minute {
		ghError(w, http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	token := "ghs_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	g.tokens[token] = app.token
	ghJSON(w, http.StatusCreated, map[string]any{"token": token, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"permissions": map[string]string{"secrets": "write"}, "repository_selection": "selected"})
}

// pemRSA writes an RSA private key as GitHub hands an App's key out: PKCS#1 PEM.
func pemRSA(key *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}
