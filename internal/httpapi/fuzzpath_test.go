package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testenv"
)

// FuzzPathParameters sends any path parameter to the routes that take one, as a member of payments:
// nothing panics, every answer is one of the expected statuses, and no answer but payments' own
// holds a secret.
func FuzzPathParameters(f *testing.F) {
	for _, seed := range []string{"payments", "search", "Search", "%73earch", "..", "a/b", "%2F", "1", "-1", "9999999999999999999999", "\x00", "ü", " "} {
		f.Add(seed)
	}
	fx := newFixture(f, testenv.Database{Driver: "sqlite", DSN: f.TempDir() + "/k.db"}, nil)
	_, search, _ := fx.credentials("search", fx.creds["member-search"])
	_, payments, _ := fx.credentials("payments", fx.creds["member"])
	if search.SecretAccessKey == "" || payments.SecretAccessKey == "" {
		f.Fatal("no keys to guard")
	}
	h := fx.srv.Config.Handler
	f.Fuzz(func(t *testing.T, param string) {
		for _, tmpl := range []string{"/v1/teams/%s/credentials", "/v1/rotations/%s", "/v1/teams/%s/rotate", "/v1/users/%s", "/v1/apikeys/%s"} {
			method := "GET"
			switch {
			case strings.HasSuffix(tmpl, "rotate"):
				method = "POST"
			case strings.HasPrefix(tmpl, "/v1/users"), strings.HasPrefix(tmpl, "/v1/apikeys"):
				method = "DELETE"
			}
			req, err := http.NewRequest(method, "http://keyward"+strings.Replace(tmpl, "%s", param, 1), nil)
			if err != nil {
				continue // not a URL any client could send
			}
			for k, v := range fx.creds["member"] {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := rec.Body.String()
			switch rec.Code {
			case 200, 301, 307, 308, 400, 403, 404, 405:
			default:
				t.Fatalf("%s %s: %d %s", method, req.URL, rec.Code, body)
			}
			if strings.Contains(body, search.SecretAccessKey) {
				t.Fatalf("%s %s: search's secret to a member of payments", method, req.URL)
			}
			if strings.Contains(body, payments.SecretAccessKey) && (rec.Code != 200 || !strings.HasSuffix(req.URL.Path, "/payments/credentials")) {
				t.Fatalf("%s %s: payments' secret where it does not belong: %d", method, req.URL, rec.Code)
			}
		}
	})
}
