package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/testenv"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// principals, in the order of the table's columns.
var principals = []string{
	"anonymous", "admin", "admin-nomfa", "operator", "auditor", "member", "member-nomfa", "apikey",
	"expired", "other-audience", "alg-none", "hs256-public-key", "other-instance", "disabled", "revoked-apikey", "outside-cidr",
}

// Every protected route answers the last eight columns alike: a token or key that proves nothing is
// 401; a good API key used from outside its networks is 403.
var refused = []int{401, 401, 401, 401, 401, 401, 401, 403}

// table is every route × every principal: the exact status expected. Columns as in principals; a
// row of 8 is followed by refused for protected routes, and repeats its anonymous answer for public
// ones (a public route ignores credentials), except where it says all 16.
var table = map[string][]int{
	//                                   anon admin  adm-n  oper  audit member mem-n apikey
	"GET /healthz":                       {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /readyz":                        {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /healthz/rotation":              {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /metrics":                       {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /.well-known/jwks.json":         {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /v1/openapi.json":               {200, 200, 200, 200, 200, 200, 200, 200},
	"POST /v1/auth/login":                {200, 200, 200, 200, 200, 200, 200, 200},
	"GET /v1/auth/oidc/login":            {404, 404, 404, 404, 404, 404, 404, 404},
	"GET /v1/auth/oidc/callback":         {404, 404, 404, 404, 404, 404, 404, 404},
	"POST /v1/auth/token":                {401, 401, 401, 401, 401, 401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 403},
	"POST /v1/auth/logout":               {401, 204, 204, 204, 204, 204, 204, 204},
	"GET /v1/me":                         {401, 200, 200, 200, 200, 200, 200, 200},
	"GET /v1/teams/{team}/credentials":   {401, 200, 403, 200, 403, 200, 403, 200},
	"POST /v1/teams/{team}/rotate":       {401, 202, 202, 202, 403, 403, 403, 403},
	"GET /v1/rotations/{id}":             {401, 200, 200, 200, 403, 403, 403, 403},
	"GET /v1/keys":                       {401, 200, 200, 200, 200, 403, 403, 403},
	"GET /v1/status":                     {401, 200, 200, 200, 200, 403, 403, 403},
	"GET /v1/audit":                      {401, 200, 200, 403, 200, 403, 403, 403},
	"GET /v1/export":                     {401, 200, 403, 403, 403, 403, 403, 403},
	"GET /v1/users":                      {401, 200, 403, 403, 403, 403, 403, 403},
	"POST /v1/users":                     {401, 201, 403, 403, 403, 403, 403, 403},
	"DELETE /v1/users/{name}":            {401, 204, 403, 403, 403, 403, 403, 403},
	"GET /v1/teams":                      {401, 200, 403, 403, 403, 403, 403, 403},
	"POST /v1/teams":                     {401, 201, 403, 403, 403, 403, 403, 403},
	"DELETE /v1/teams/{team}":            {401, 204, 403, 403, 403, 403, 403, 403},
	"POST /v1/teams/{team}/members":      {401, 204, 403, 403, 403, 403, 403, 403},
	"GET /v1/apikeys":                    {401, 200, 403, 403, 403, 403, 403, 403},
	"POST /v1/apikeys":                   {401, 201, 403, 403, 403, 403, 403, 403},
	"DELETE /v1/apikeys/{name}":          {401, 204, 403, 403, 403, 403, 403, 403},
	"POST /v1/leaks":                     {401, 200, 200, 200, 403, 403, 403, 403},
	"POST /v1/leaks/aws-health":          {401, 200, 200, 200, 403, 403, 403, 403},
	"GET /v1/inventory":                  {401, 200, 200, 200, 200, 403, 403, 403},
	"GET /v1/reports/compliance":         {401, 200, 200, 403, 200, 403, 403, 403},
	"GET /v1/reports/compliance/history": {401, 200, 200, 403, 200, 403, 403, 403},
}

// request builds a route's request for a principal: concrete path values and a valid body, unique
// per principal where the route creates something.
func (f *fixture) request(pattern, who string, rotationID int64) (method, path string, body any) {
	method, path, _ = strings.Cut(pattern, " ")
	uniq := strings.ReplaceAll(who, "-", "")
	switch pattern {
	case "POST /v1/auth/login":
		body = map[string]string{"username": "auditor", "password": password.Reveal()}
	case "POST /v1/users":
		body = map[string]any{"name": "u-" + uniq, "role": "member", "teams": []string{"search"}, "password": password.Reveal()}
	case "POST /v1/teams":
		body = map[string]any{"name": "t-" + uniq, "iam_user": "app-" + uniq, "account_id": account}
	case "POST /v1/apikeys":
		body = map[string]any{"name": "k-" + uniq, "role": "member", "teams": []string{"search"}, "cidrs": []string{"10.0.0.0/8"}, "expires": "90d"}
	case "POST /v1/teams/{team}/members":
		body = map[string]string{"member": "user:member-search"}
		path = strings.Replace(path, "{team}", "legacy", 1)
	case "DELETE /v1/users/{name}":
		path = strings.Replace(path, "{name}", "u-"+uniq, 1)
	case "DELETE /v1/teams/{team}":
		path = strings.Replace(path, "{team}", "t-"+uniq, 1)
	case "DELETE /v1/apikeys/{name}":
		path = strings.Replace(path, "{name}", "k-"+uniq, 1)
	case "POST /v1/leaks":
		body = map[string]any{"access_key_id": "AKIAZZZZZZZZZZZZZZZZ", "reason": "a test"}
	case "POST /v1/leaks/aws-health":
		body = healthEventBody("AKIAZZZZZZZZZZZZZZZY")
	}
	path = strings.Replace(path, "{team}", "payments", 1)
	path = strings.Replace(path, "{id}", itoa(rotationID), 1)
	if pattern == "GET /v1/auth/oidc/callback" {
		path += "?state=x&code=y"
	}
	return method, path, body
}

// order runs creations before deletions, logout last (it revokes the caller's token).
func order(routes []httpapi.Route) []string {
	var out []string
	for _, r := range routes {
		out = append(out, r.Pattern)
	}
	rank := func(p string) int {
		switch {
		case strings.HasPrefix(p, "DELETE"):
			return 2
		case p == "POST /v1/auth/logout":
			return 3
		}
		return 1
	}
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}

func TestRouteRoleTable(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	routes := httpapi.Routes(httpapi.Options{API: f.api, Metrics: metrics.New(metrics.Sources{})})

	// Deny by default: every route names a permission, and only known ones.
	known := []auth.Permission{auth.Public, auth.Authenticated, auth.ReadCredentials, auth.Rotate, auth.ReadInventory,
		auth.ReadAudit, auth.Export, auth.Administer, auth.ReportLeak, auth.ReadReports}
	for _, r := range routes {
		if !slices.Contains(known, r.Perm) {
			t.Errorf("route %s declares permission %q", r.Pattern, r.Perm)
		}
		if _, ok := table[r.Pattern]; !ok {
			t.Errorf("route %s is not in the table", r.Pattern)
		}
	}
	if len(routes) != len(table) {
		t.Errorf("%d routes, %d table rows", len(routes), len(table))
	}

	// A rotation to look at.
	status, body := f.do("POST", "/v1/teams/search/rotate", f.creds["admin"], nil)
	var started struct {
		RotationID int64 `json:"rotation_id"`
	}
	if status != http.StatusAccepted || json.Unmarshal(body, &started) != nil {
		t.Fatalf("rotate search: %d %s", status, body)
	}
	f.waitRotation(started.RotationID, f.creds["admin"])

	for _, pattern := range order(routes) {
		row := table[pattern]
		perm := routes[slices.IndexFunc(routes, func(r httpapi.Route) bool { return r.Pattern == pattern })].Perm
		if len(row) == 8 {
			if perm == auth.Public {
				for range refused {
					row = append(row, row[0])
				}
			} else {
				row = append(row, refused...)
			}
		}
		for i, who := range principals {
			method, path, reqBody := f.request(pattern, who, started.RotationID)
			h := f.creds[who]
			if pattern == "POST /v1/auth/logout" && row[i] == 204 {
				h = bearerOrKey(f, who) // a fresh token: logout revokes it
			}
			got, resp := f.doChecked(method, path, h, reqBody)
			if got != row[i] {
				t.Errorf("%s as %s: %d, want %d: %s", pattern, who, got, row[i], resp)
				continue
			}
			if got == http.StatusAccepted && strings.Contains(pattern, "rotate") {
				var r struct {
					RotationID int64 `json:"rotation_id"`
				}
				_ = json.Unmarshal(resp, &r)
				if s := f.waitRotation(r.RotationID, f.creds["admin"]); s != "rotated" {
					t.Errorf("%s as %s: rotation %s", pattern, who, s)
				}
			}
			if got >= 400 && !json.Valid(resp) {
				t.Errorf("%s as %s: %d without a problem document: %s", pattern, who, got, resp)
			}
		}
	}
}

// bearerOrKey returns fresh credentials for who (a new login for users), so that logging out does
// not spend the ones the rest of the table uses.
func bearerOrKey(f *fixture, who string) http.Header {
	if strings.HasPrefix(who, "apikey") {
		return f.creds[who]
	}
	return bearer(f.login(who))
}

func TestProblemDocuments(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	for _, c := range []struct {
		method, path string
		h            http.Header
		body         any
		status       int
		detail       string
	}{
		{"GET", "/v1/nothing-here", nil, nil, 404, "GET /v1/nothing-here: not found"},
		{"PUT", "/v1/me", f.creds["admin"], nil, 405, "method not allowed"},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": "x", "rol": "admin"}, 400, `unknown field "rol"`},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": 7}, 400, "body.name: want a JSON string, got a JSON number"},
		{"POST", "/v1/auth/login", nil, []int{1}, 400, "body: want a JSON object, got a JSON array"},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": "Bad Name", "role": "member", "password": password.Reveal()}, 400, `user name "Bad Name"`},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": "bob", "role": "root", "password": password.Reveal()}, 400, `body.role: role "root"`},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": "bob", "role": "member", "password": "short"}, 400, "password: want at least 12"},
		{"POST", "/v1/users", f.creds["admin"], map[string]any{"name": "admin", "role": "member", "password": password.Reveal()}, 409, "already exists"},
		{"POST", "/v1/teams", f.creds["admin"], map[string]any{"name": "x", "iam_user": "u", "account_id": "12"}, 400, `account id "12": want 12 digits`},
		{"POST", "/v1/apikeys", f.creds["admin"], map[string]any{"name": "k", "role": "member", "cidrs": []string{"10.0.0.0/33"}}, 400, `body.cidrs[0]: "10.0.0.0/33"`},
		{"POST", "/v1/teams", f.creds["admin"], map[string]any{"name": "x", "iam_user": "u", "account_id": "999999999999"}, 404, "account 999999999999 is not one Keyward manages"},
		{"POST", "/v1/apikeys", f.creds["admin"], map[string]any{"name": "k", "role": "member", "expires": "soon"}, 400, `body.expires "soon"`},
		{"GET", "/v1/teams/payments/credentials?format=yaml", f.creds["member"], nil, 400, `format "yaml"`},
		{"GET", "/v1/rotations/abc", f.creds["admin"], nil, 400, `rotation id "abc"`},
		{"GET", "/v1/rotations/999", f.creds["admin"], nil, 404, "rotation 999"},
		{"GET", "/v1/audit?limit=5000", f.creds["auditor"], nil, 400, `limit "5000"`},
		{"GET", "/v1/audit?since=yesterday", f.creds["auditor"], nil, 400, `since "yesterday"`},
		{"GET", "/v1/teams/nope/credentials", f.creds["admin"], nil, 404, `team "nope"`},
		{"GET", "/v1/teams/payments/credentials", f.creds["member-nomfa"], nil, 403, "second factor"},
		{"GET", "/v1/teams/legacy/credentials", f.creds["admin"], nil, 409, "import"},
	} {
		resp := f.send(c.method, c.path, c.h, c.body)
		var p struct {
			Type, Title, Detail string
			Status              int
		}
		err := json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || p.Status != c.status || !strings.Contains(p.Detail, c.detail) ||
			strings.Contains(p.Detail, "httpapi.") || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
			resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s %+v (%v), want %d with %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), p, err, c.status, c.detail)
		}
	}
	_ = fmt.Sprint
}
