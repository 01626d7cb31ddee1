package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/testenv"
)

// genCase is one request made from the document: valid (the document accepts it) or not.
type genCase struct {
	what       string
	method     string
	path       string
	query      url.Values
	body       any // nil: none
	valid      bool
	docCanTell bool // false: a condition only a description states (x-requires); the validator cannot see it
}

// schemaGen makes values from the document's JSON schemas.
type schemaGen struct {
	doc map[string]any
	rnd *rand.Rand
}

func (g schemaGen) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		s = g.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			s = s[part].(map[string]any)
		}
	}
}

// valid is a value s accepts: its example, default or first enum value where it has one, else one
// made from its type, pattern and bounds.
func (g schemaGen) valid(s map[string]any) any {
	s = g.resolve(s)
	if ex, ok := s["examples"].([]any); ok && len(ex) > 0 {
		return ex[g.rnd.IntN(len(ex))]
	}
	if c, ok := s["const"]; ok {
		return c
	}
	if e, ok := s["enum"].([]any); ok {
		return e[g.rnd.IntN(len(e))]
	}
	if d, ok := s["default"]; ok {
		return d
	}
	switch s["type"] {
	case "string":
		if p, ok := s["pattern"].(string); ok {
			return fromPattern(g.rnd, p)
		}
		if s["format"] == "date-time" {
			return "2026-12-01T10:00:00Z"
		}
		n := 3
		if m, ok := s["minLength"].(float64); ok {
			n = int(m)
		}
		return strings.Repeat("x", n)
	case "integer":
		if m, ok := s["minimum"].(float64); ok {
			return int(m)
		}
		return 1
	case "boolean":
		return true
	case "array":
		item := g.valid(s["items"].(map[string]any))
		out := []any{item}
		if c, ok := s["contains"].(map[string]any); ok {
			out = append(out, g.valid(c))
		}
		return out
	case "object":
		obj := map[string]any{}
		props, _ := s["properties"].(map[string]any)
		for name, p := range props {
			obj[name] = g.valid(p.(map[string]any))
		}
		return obj
	}
	return nil
}

// invalid are values s refuses, each with what is wrong with it.
func (g schemaGen) invalid(s map[string]any) map[string]any {
	s = g.resolve(s)
	out := map[string]any{}
	switch s["type"] {
	case "string":
		out["not a string"] = 42
		if e, ok := s["enum"].([]any); ok {
			out["not one of the enum"] = "no-such-" + fmt.Sprint(e[0])
		}
		if c, ok := s["const"]; ok {
			out["not the constant"] = "not-" + fmt.Sprint(c)
		}
		if p, ok := s["pattern"].(string); ok {
			re := regexp.MustCompile(p)
			for _, cand := range []string{"", "Bad Name!", "-x", strings.Repeat("9", 70), "x y"} {
				if !re.MatchString(cand) {
					out["not matching "+p] = cand
					break
				}
			}
		}
		if m, ok := s["maxLength"].(float64); ok {
			out["longer than maxLength"] = strings.Repeat("a", int(m)+1)
		}
		if m, ok := s["minLength"].(float64); ok && m > 0 {
			out["shorter than minLength"] = strings.Repeat("a", int(m)-1)
		}
		if s["format"] == "date-time" {
			out["not a date-time"] = "yesterday"
		}
	case "integer":
		out["not an integer"] = "x"
		if m, ok := s["minimum"].(float64); ok {
			out["under the minimum"] = int(m) - 1
		}
		if m, ok := s["maximum"].(float64); ok {
			out["over the maximum"] = int(m) + 1
		}
	case "boolean":
		out["not a boolean"] = "yes"
	case "array":
		out["not an array"] = "x"
		items := s["items"].(map[string]any)
		for what, v := range g.invalid(items) {
			out["an item "+what] = []any{v}
		}
		if _, ok := s["contains"]; ok {
			out["no item it must contain"] = []any{g.valid(items)}
		}
	case "object":
		out["not an object"] = []any{}
		valid := g.valid(s).(map[string]any)
		props, _ := s["properties"].(map[string]any)
		for name, p := range props {
			for what, v := range g.invalid(p.(map[string]any)) {
				obj := cloneMap(valid)
				obj[name] = v
				out[name+": "+what] = obj
			}
		}
		required, _ := s["required"].([]any)
		for _, r := range required {
			obj := cloneMap(valid)
			delete(obj, r.(string))
			out[r.(string)+": missing"] = obj
		}
		if s["additionalProperties"] == false {
			obj := cloneMap(valid)
			obj["unknown_field"] = "x"
			out["an unknown field"] = obj
		}
	}
	return out
}

func cloneMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// fromPattern makes a string the regular expression p matches: each repetition taken once or
// twice (or its lower bound), each class's first ranges, each alternative by chance.
func fromPattern(rnd *rand.Rand, p string) string {
	re, err := syntax.Parse(p, syntax.Perl)
	if err != nil {
		panic(fmt.Sprintf("pattern %q: %v", p, err))
	}
	var b strings.Builder
	var walk func(*syntax.Regexp)
	repeat := func(sub *syntax.Regexp, lo, hi int) {
		n := lo
		if hi < 0 || hi > lo {
			n = max(lo, 1+rnd.IntN(2))
			if hi >= 0 {
				n = min(n, hi)
			}
		}
		for range n {
			walk(sub)
		}
	}
	walk = func(r *syntax.Regexp) {
		switch r.Op {
		case syntax.OpLiteral:
			b.WriteString(string(r.Rune))
		case syntax.OpCharClass:
			i := rnd.IntN(len(r.Rune) / 2)
			lo, hi := r.Rune[2*i], r.Rune[2*i+1]
			b.WriteRune(lo + rune(rnd.IntN(int(min(hi-lo, 25))+1)))
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			b.WriteByte('a')
		case syntax.OpCapture:
			walk(r.Sub[0])
		case syntax.OpConcat:
			for _, s := range r.Sub {
				walk(s)
			}
		case syntax.OpAlternate:
			walk(r.Sub[rnd.IntN(len(r.Sub))])
		case syntax.OpStar:
			repeat(r.Sub[0], 0, -1)
		case syntax.OpPlus:
			repeat(r.Sub[0], 1, -1)
		case syntax.OpQuest:
			repeat(r.Sub[0], 0, 1)
		case syntax.OpRepeat:
			repeat(r.Sub[0], r.Min, r.Max)
		}
	}
	walk(re)
	return b.String()
}

// pathValues are the path parameters' values that exist in the fixture.
var pathValues = map[string]string{"team": "payments", "id": "1", "name": "member-search"}

// generate makes the requests of every operation that takes input: for a body, a valid one and
// one per way each field can be wrong; for query parameters, each alone and all together, and
// each wrong; for a path parameter with a pattern, one that breaks it.
func (g schemaGen) generate(skip map[string]bool) []genCase {
	var out []genCase
	paths := g.doc["paths"].(map[string]any)
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		for _, method := range []string{"get", "post", "put", "delete"} {
			op, ok := paths[path].(map[string]any)[method].(map[string]any)
			pattern := strings.ToUpper(method) + " " + path
			if !ok || skip[pattern] {
				continue
			}
			base, query, badPath := g.params(path, op)
			add := func(c genCase) {
				c.method, c.what = strings.ToUpper(method), pattern+": "+c.what
				if c.path == "" {
					c.path = base
				}
				if c.query == nil {
					c.query = url.Values{}
				}
				c.docCanTell = c.docCanTell || c.valid
				out = append(out, c)
			}
			var body map[string]any
			if rb, ok := op["requestBody"].(map[string]any); ok {
				body = rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
				add(genCase{what: "a valid body", body: g.valid(body), valid: true})
				for what, v := range g.invalid(body) {
					add(genCase{what: "body " + what, body: v, docCanTell: true})
				}
			}
			var validBody any
			if body != nil {
				validBody = g.valid(body)
			}
			for _, bp := range badPath {
				add(genCase{what: bp.what, path: bp.path, body: validBody, docCanTell: true})
			}
			if len(query) == 0 {
				continue
			}
			all := url.Values{}
			for _, q := range query {
				v := url.Values{q.name: {fmt.Sprint(g.valid(q.schema))}}
				for k, want := range q.requires {
					v.Set(k, want)
				}
				add(genCase{what: "query " + q.name + " alone", query: v, body: validBody, valid: true})
				ok := true
				for k, want := range q.requires {
					if all.Has(k) && all.Get(k) != want {
						ok = false
					}
				}
				if ok {
					for k, vs := range v {
						all[k] = vs
					}
				}
				for what, bad := range g.invalid(q.schema) {
					if _, isArr := bad.([]any); isArr || bad == "" || strings.HasPrefix(what, "not a string") {
						continue // a query value is a string, and an empty one is no value
					}
					v := url.Values{q.name: {fmt.Sprint(bad)}}
					for k, want := range q.requires {
						v.Set(k, want)
					}
					add(genCase{what: "query " + q.name + " " + what, query: v, body: validBody, docCanTell: true})
				}
				for k := range q.requires {
					v := url.Values{q.name: {fmt.Sprint(g.valid(q.schema))}}
					add(genCase{what: "query " + q.name + " without " + k, query: v, body: validBody})
				}
			}
			add(genCase{what: "every query parameter", query: all, body: validBody, valid: true})
		}
	}
	return out
}

type queryParam struct {
	name     string
	schema   map[string]any
	requires map[string]string // x-requires: the other parameters' values it needs
}

type badPath struct{ what, path string }

// params fills the path's parameters with values that exist, lists the query parameters, and
// makes a path for each path parameter's pattern broken.
func (g schemaGen) params(path string, op map[string]any) (string, []queryParam, []badPath) {
	ps, _ := op["parameters"].([]any)
	filled := path
	var query []queryParam
	var bad []badPath
	for _, p := range ps {
		p := g.resolve(p.(map[string]any))
		name := p["name"].(string)
		schema := p["schema"].(map[string]any)
		switch p["in"] {
		case "path":
			filled = strings.ReplaceAll(filled, "{"+name+"}", pathValues[name])
		case "query":
			q := queryParam{name: name, schema: schema, requires: map[string]string{}}
			if r, ok := p["x-requires"].(map[string]any); ok {
				for k, v := range r {
					q.requires[k] = v.(string)
				}
			}
			query = append(query, q)
		}
	}
	for _, p := range ps {
		p := g.resolve(p.(map[string]any))
		if p["in"] != "path" {
			continue
		}
		name := p["name"].(string)
		schema := g.resolve(p["schema"].(map[string]any))
		for what, v := range g.invalid(schema) {
			s := fmt.Sprint(v)
			if s == "" || strings.Contains(what, "not a string") {
				continue // an empty segment is another route; a number is a string in a path
			}
			p := strings.ReplaceAll(path, "{"+name+"}", url.PathEscape(s))
			for other, val := range pathValues {
				p = strings.ReplaceAll(p, "{"+other+"}", val)
			}
			bad = append(bad, badPath{"path " + name + " " + what, p})
		}
	}
	return filled, query, bad
}

// TestRequestsFromTheDocument: requests generated from the OpenAPI document's schemas — for every
// operation that takes a body, query parameters or a path parameter with a pattern — are answered
// as the document says: a request it accepts never gets 400, one it refuses always does. The
// generator is checked too: the document's own validator agrees with it on every request but
// those whose fault only a description can state (x-requires).
func TestRequestsFromTheDocument(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	var doc map[string]any
	if err := json.Unmarshal(httpapi.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	model, err := libopenapi.NewDocument(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	val, errs := validator.NewValidator(model)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	g := schemaGen{doc: doc, rnd: rand.New(rand.NewPCG(1, 2))}
	// Login and the SSO callback are rate-limited per client and exercised on their own.
	cases := g.generate(map[string]bool{"POST /v1/auth/login": true, "GET /v1/auth/oidc/callback": true})
	valid, invalid := 0, 0
	for _, c := range cases {
		target := c.path
		if len(c.query) > 0 {
			target += "?" + c.query.Encode()
		}
		var raw []byte
		if c.body != nil {
			raw, _ = json.Marshal(c.body)
		}
		req, _ := http.NewRequest(c.method, "http://keyward.test"+target, bytes.NewReader(raw))
		if c.body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", f.creds["admin"].Get("Authorization"))
		docOK, verrs := val.ValidateHttpRequest(req)
		if c.docCanTell && docOK != c.valid {
			why := ""
			for _, e := range verrs {
				why += e.Message + "; "
			}
			t.Errorf("%s: the generator says valid=%v, the document's validator %v (%s) — %s", c.what, c.valid, docOK, why, target)
			continue
		}
		h := f.creds["admin"].Clone()
		var body any
		if c.body != nil {
			body = json.RawMessage(raw)
		}
		resp := f.send(c.method, target, h, body)
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case c.valid && resp.StatusCode == http.StatusBadRequest:
			t.Errorf("%s: the document accepts %s %s %s, the server answers 400: %s", c.what, c.method, target, raw, answer)
		case !c.valid && resp.StatusCode != http.StatusBadRequest:
			t.Errorf("%s: the document refuses %s %s %s, the server answers %d: %s", c.what, c.method, target, raw, resp.StatusCode, answer)
		}
		if c.valid {
			valid++
		} else {
			invalid++
		}
	}
	if valid < 25 || invalid < 80 {
		t.Fatalf("only %d valid and %d invalid requests generated", valid, invalid)
	}
	t.Logf("%d valid and %d invalid requests", valid, invalid)
}
