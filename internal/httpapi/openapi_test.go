package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/testenv"
)

// TestOpenAPI: the document is valid OpenAPI 3.1 and describes exactly the routes registered — no
// route missing, none extra — and the security each needs.
func TestOpenAPI(t *testing.T) {
	doc, err := libopenapi.NewDocument(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("OpenAPI %s", v)
	}
	val, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := val.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}

	var raw struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPI(), &raw); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range raw.Paths {
		for method, op := range ops {
			pattern := strings.ToUpper(method) + " " + path
			documented = append(documented, pattern)
			if op.Security == nil {
				t.Errorf("%s: says nothing of security", pattern)
			}
		}
	}
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	var registered []string
	for _, r := range httpapi.Routes(httpapi.Options{API: f.api, Metrics: metrics.New(metrics.Sources{})}) {
		registered = append(registered, r.Pattern)
		public := len(raw.Paths[strings.SplitN(r.Pattern, " ", 2)[1]][strings.ToLower(strings.SplitN(r.Pattern, " ", 2)[0])].Security) == 0
		if public != (r.Perm == "public") && r.Pattern != "POST /v1/auth/token" {
			t.Errorf("%s: documented public %v, registered with %s", r.Pattern, public, r.Perm)
		}
	}
	slices.Sort(documented)
	slices.Sort(registered)
	for _, p := range registered {
		if !slices.Contains(documented, p) {
			t.Errorf("route %s is not documented", p)
		}
	}
	for _, p := range documented {
		if !slices.Contains(registered, p) {
			t.Errorf("documented %s is not a route", p)
		}
	}
}

var (
	specOnce sync.Once
	spec     validator.Validator
)

// doChecked is do, and checks the answer against the OpenAPI document: its status is documented
// for the operation, and its body matches the documented schema.
func (f *fixture) doChecked(method, path string, h http.Header, body any) (int, []byte) {
	f.t.Helper()
	specOnce.Do(func() {
		doc, err := libopenapi.NewDocument(httpapi.OpenAPI())
		if err != nil {
			panic(err)
		}
		spec, _ = validator.NewValidator(doc)
	})
	resp := f.send(method, path, h, body)
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		f.t.Fatal(err)
	}
	req, _ := http.NewRequest(method, path, nil)
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	if ok, errs := spec.ValidateHttpResponse(req, resp); !ok {
		for _, e := range errs {
			f.t.Errorf("%s %s → %d does not match the OpenAPI document: %s (%s)", method, path, resp.StatusCode, e.Message, e.Reason)
		}
	}
	return resp.StatusCode, raw
}
