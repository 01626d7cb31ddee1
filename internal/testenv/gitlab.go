package testenv

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// GitLab is a test server for the part of GitLab's REST API v4 that Keyward uses, written from
// GitLab's documentation as read on 2026-12-08:
//
//   - "Project-level CI/CD variables API" and "Group-level CI/CD variables API"
//     (docs.gitlab.com/api/project_level_variables, …/group_level_variables): GET, POST and PUT
//     /projects/:id/variables[/:key] and /groups/:id/variables[/:key], :id a number or the
//     URL-encoded path; a key is unique per environment_scope, filter[environment_scope] chooses
//     among variables of one key (a GET of a key held in several scopes without it is 409); POST
//     answers 201, PUT 200; a key taken in that scope is 400 {"message": {"key": ["(KEY) has
//     already been taken"]}}; a missing variable is 404 {"message": "404 Variable Not Found"}.
//   - "Mask a CI/CD variable" and GitLab's Ci::Maskable: a masked value is one line of 8 or more
//     characters with no white space, and, unless the variable is raw, of the Base64 alphabet with
//     @ : . ~ - _; otherwise 400 {"message": {"value": ["is invalid"]}}. Strict makes the server
//     an older GitLab that applies the stricter rule to raw variables too.
//   - "REST API authentication": PRIVATE-TOKEN (or Authorization: Bearer); 401 {"message": "401
//     Unauthorized"}; a project a token cannot see is 404 {"message": "404 Project Not Found"}; CI/CD
//     variables need the Maintainer role, else 403 {"message": "403 Forbidden"}.
//   - "REST API pagination": page, per_page (default 20, at most 100), X-Total, X-Total-Pages,
//     X-Page, X-Per-Page, X-Next-Page, X-Prev-Page and Link.
//   - "Rate limits": 429 with Retry-After and RateLimit-* headers.
type GitLab struct {
	URL    string
	Strict bool

	mu        sync.Mutex
	projects  map[string]int64 // path → id
	groups    map[string]int64
	tokens    map[string]GitLabToken
	variables map[string][]*GitLabVariable // "projects/ID" or "groups/ID" → its variables
	fail      []ghFailure
	Requests  []string
}

// GitLabToken is what a token may do: the projects and groups (by path) it sees, and whether it is
// a Maintainer there.
type GitLabToken struct {
	Sees       []string
	Maintainer bool
}

// GitLabVariable is a CI/CD variable as the API reads and writes it.
type GitLabVariable struct {
	Key              string `json:"key"`
	Value            string `json:"value"`
	VariableType     string `json:"variable_type"`
	Protected        bool   `json:"protected"`
	Masked           bool   `json:"masked"`
	Raw              bool   `json:"raw"`
	EnvironmentScope string `json:"environment_scope"`
	Description      any    `json:"description"`
}

// NewGitLab starts the server for the test.
func NewGitLab(t testing.TB) *GitLab {
	t.Helper()
	g := &GitLab{projects: map[string]int64{}, groups: map[string]int64{}, tokens: map[string]GitLabToken{}, variables: map[string][]*GitLabVariable{}}
	srv := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	return g
}

// AddProject makes a project; its id is returned.
func (g *GitLab) AddProject(path string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := int64(100 + len(g.projects) + len(g.groups))
	g.projects[path] = id
	return id
}

// AddGroup makes a group; its id is returned.
func (g *GitLab) AddGroup(path string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := int64(100 + len(g.projects) + len(g.groups))
	g.groups[path] = id
	return id
}

// AddToken makes a token.
func (g *GitLab) AddToken(token string, t GitLabToken) {
	g.mu.Lock()
	g.tokens[token] = t
	g.mu.Unlock()
}

// FailNext makes the next n requests fail with status, message and headers.
func (g *GitLab) FailNext(n, status int, message string, headers map[string]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.fail = append(g.fail, ghFailure{status, headers, message})
	}
}

// Variable returns a variable of a project or group (by path) in a scope.
func (g *GitLab) Variable(path, key, scope string) (GitLabVariable, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	root := g.root(path)
	for _, v := range g.variables[root] {
		if v.Key == key && v.EnvironmentScope == scope {
			return *v, true
		}
	}
	return GitLabVariable{}, false
}

// SetVariable writes a variable as someone else would.
func (g *GitLab) SetVariable(path string, v GitLabVariable) {
	g.mu.Lock()
	defer g.mu.Unlock()
	root := g.root(path)
	for _, old := range g.variables[root] {
		if old.Key == v.Key && old.EnvironmentScope == v.EnvironmentScope {
			*old = v
			return
		}
	}
	g.variables[root] = append(g.variables[root], &v)
}

// Count counts the requests whose "METHOD path" starts with prefix.
func (g *GitLab) Count(prefix string) int {
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

func (g *GitLab) root(path string) string {
	if id, ok := g.projects[path]; ok {
		return fmt.Sprintf("projects/%d", id)
	}
	return fmt.Sprintf("groups/%d", g.groups[path])
}

var (
	glRoute      = regexp.MustCompile(`^/api/v4/(projects|groups)/([^/]+)(/variables(/([^/]+))?)?$`)
	glKeyRule    = regexp.MustCompile(`^[A-Za-z0-9_]{1,255}$`)
	glMaskStrict = regexp.MustCompile(`^[a-zA-Z0-9_+=/@:.~-]{8,}$`)
	glMaskRaw    = regexp.MustCompile(`^\S{8,}$`)
)

func glError(w http.ResponseWriter, status int, message any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"message": message})
}

func (g *GitLab) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Requests = append(g.Requests, r.Method+" "+r.URL.Path)
	if len(g.fail) > 0 {
		f := g.fail[0]
		g.fail = g.fail[1:]
		for k, v := range f.headers {
			w.Header().Set(k, v)
		}
		glError(w, f.status, f.message)
		return
	}
	token := r.Header.Get("PRIVATE-TOKEN")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	tok, ok := g.tokens[token]
	if !ok {
		glError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	m := glRoute.FindStringSubmatch(r.URL.EscapedPath())
	if m == nil {
		glError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	kind := m[1]
	path, id, ok := g.find(kind, m[2])
	if !ok || !seesPath(tok, path) {
		glError(w, http.StatusNotFound, "404 "+map[string]string{"projects": "Project", "groups": "Group"}[kind]+" Not Found")
		return
	}
	root := fmt.Sprintf("%s/%d", kind, id)
	if m[3] == "" {
		if r.Method != http.MethodGet {
			glError(w, http.StatusMethodNotAllowed, "405 Method Not Allowed")
			return
		}
		field := "path_with_namespace"
		if kind == "groups" {
			field = "full_path"
		}
		ghJSON(w, http.StatusOK, map[string]any{"id": id, field: path})
		return
	}
	if !tok.Maintainer {
		glError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	key, _ := url.PathUnescape(m[5])
	switch {
	case r.Method == http.MethodGet && key == "":
		g.listVariables(w, r, root)
	case r.Method == http.MethodGet:
		g.getVariable(w, r, root, key)
	case r.Method == http.MethodPost && key == "":
		g.createVariable(w, r, root)
	case r.Method == http.MethodPut && key != "":
		g.updateVariable(w, r, root, key)
	default:
		glError(w, http.StatusMethodNotAllowed, "405 Method Not Allowed")
	}
}

// find looks a project or group up by its URL-encoded path or its id.
func (g *GitLab) find(kind, rawID string) (path string, id int64, ok bool) {
	ident, _ := url.PathUnescape(rawID)
	all := g.projects
	if kind == "groups" {
		all = g.groups
	}
	for p, i := range all {
		if p == ident || strconv.FormatInt(i, 10) == ident {
			return p, i, true
		}
	}
	return "", 0, false
}

func seesPath(tok GitLabToken, path string) bool {
	for _, s := range tok.Sees {
		if s == "*" || s == path || strings.HasPrefix(path, s+"/") {
			return true
		}
	}
	return false
}

// matching are the variables of key, in the scope the filter names (all scopes without one).
func (g *GitLab) matching(root, key string, r *http.Request) []*GitLabVariable {
	scope, filtered := r.URL.Query()["filter[environment_scope]"]
	var out []*GitLabVariable
	for _, v := range g.variables[root] {
		if v.Key == key && (!filtered || v.EnvironmentScope == scope[0]) {
			out = append(out, v)
		}
	}
	return out
}

func (g *GitLab) getVariable(w http.ResponseWriter, r *http.Request, root, key string) {
	found := g.matching(root, key, r)
	switch len(found) {
	case 0:
		glError(w, http.StatusNotFound, "404 Variable Not Found")
	case 1:
		ghJSON(w, http.StatusOK, found[0])
	default:
		glError(w, http.StatusConflict, "There are multiple variables with provided parameters. Please use 'filter[environment_scope]'")
	}
}

func (g *GitLab) listVariables(w http.ResponseWriter, r *http.Request, root string) {
	perPage, page := 20, 1
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		page = v
	}
	vars := g.variables[root]
	pages := max(1, (len(vars)+perPage-1)/perPage)
	h := w.Header()
	h.Set("X-Total", strconv.Itoa(len(vars)))
	h.Set("X-Total-Pages", strconv.Itoa(pages))
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(perPage))
	h.Set("X-Next-Page", "")
	h.Set("X-Prev-Page", "")
	link := func(p int, rel string) string {
		return fmt.Sprintf(`<%s%s?page=%d&per_page=%d>; rel="%s"`, g.URL, r.URL.Path, p, perPage, rel)
	}
	links := []string{link(1, "first"), link(pages, "last")}
	if page < pages {
		h.Set("X-Next-Page", strconv.Itoa(page+1))
		links = append(links, link(page+1, "next"))
	}
	if page > 1 {
		h.Set("X-Prev-Page", strconv.Itoa(page-1))
		links = append(links, link(page-1, "prev"))
	}
	h.Set("Link", strings.Join(links, ", "))
	out := []*GitLabVariable{}
	for i := (page - 1) * perPage; i < min(page*perPage, len(vars)); i++ {
		out = append(out, vars[i])
	}
	ghJSON(w, http.StatusOK, out)
}

// validate checks a variable as GitLab's model does, and answers 400 when it fails.
func (g *GitLab) validate(w http.ResponseWriter, v *GitLabVariable) bool {
	problems := map[string][]string{}
	if !glKeyRule.MatchString(v.Key) {
		problems["key"] = []string{"can contain only letters, digits and '_'."}
	}
	if v.Masked {
		rule := glMaskStrict
		if v.Raw && !g.Strict {
			rule = glMaskRaw
		}
		if !rule.MatchString(v.Value) {
			problems["value"] = []string{"is invalid"}
		}
	}
	if len(problems) > 0 {
		glError(w, http.StatusBadRequest, problems)
		return false
	}
	return true
}

func decodeVariable(r *http.Request) (*GitLabVariable, error) {
	v := &GitLabVariable{VariableType: "env_var", EnvironmentScope: "*"}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return nil, err
	}
	if v.EnvironmentScope == "" {
		v.EnvironmentScope = "*"
	}
	return v, nil
}

func (g *GitLab) createVariable(w http.ResponseWriter, r *http.Request, root string) {
	v, err := decodeVariable(r)
	if err != nil || v.Key == "" {
		glError(w, http.StatusBadRequest, "key is missing")
		return
	}
	if !g.validate(w, v) {
		return
	}
	for _, old := range g.variables[root] {
		if old.Key == v.Key && old.EnvironmentScope == v.EnvironmentScope {
			glError(w, http.StatusBadRequest, map[string][]string{"key": {"(" + v.Key + ") has already been taken"}})
			return
		}
	}
	g.variables[root] = append(g.variables[root], v)
	ghJSON(w, http.StatusCreated, v)
}

func (g *GitLab) updateVariable(w http.ResponseWriter, r *http.Request, root, key string) {
	found := g.matching(root, key, r)
	if len(found) == 0 {
		glError(w, http.StatusNotFound, "404 Variable Not Found")
		return
	}
	v, err := decodeVariable(r)
	if err != nil {
		glError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	v.Key = key
	if !g.validate(w, v) {
		return
	}
	*found[0] = *v
	ghJSON(w, http.StatusOK, found[0])
}
