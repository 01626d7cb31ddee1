// Package gitlab delivers keys to GitLab CI/CD variables of a project or a group through GitLab's
// REST API v4, as GitLab documents it in "Project-level CI/CD variables API" and "Group-level CI/CD
// variables API": a variable is updated with PUT …/variables/:key (filter[environment_scope]
// choosing among variables of one key in several scopes), or created with POST when it is not
// there.
//
// GitLab masks a variable's value in job logs only when the value meets its masking rules (see
// MaskError): Keyward checks them before it writes anything, and never writes a variable unmasked
// where masked was asked. Variables are written raw (GitLab does not expand "$" in them).
//
// A variable has no versions: Stage checks that the project or group can be written and that the
// values can be masked; Publish writes the secret, then the id (or one JSON variable); Withdraw
// writes the old key back; Current reads the values back.
package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// Destination writes gitlab_ci targets.
type Destination struct {
	Log    *slog.Logger
	Client *http.Client
}

var _ delivery.Destination = (*Destination)(nil)

// New returns a destination with a 30-second timeout per request.
func New(log *slog.Logger) *Destination {
	return &Destination{Log: log, Client: &http.Client{Timeout: 30 * time.Second}}
}

// maskRaw is GitLab's masking rule for a raw variable (app/models/concerns/ci/maskable.rb): one line
// of 8 or more characters with no white space. Keyward writes every variable raw; a variable GitLab
// expands would also have to keep to the Base64 alphabet and @ : . ~ - _.
var maskRaw = regexp.MustCompile(`^\S{8,}$`)

// MaskError says that a value cannot be masked, and why; nothing was written.
type MaskError struct {
	Target, Variable, Why string
}

func (e *MaskError) Error() string {
	return fmt.Sprintf("%s: the value of %s cannot be masked (%s): GitLab masks only a value of 8 or more characters with no white space; nothing was written (set masked: false to write it unmasked)",
		e.Target, e.Variable, e.Why)
}

// Permanent: a value that cannot be masked now cannot be masked on a second try.
func (e *MaskError) Permanent() bool { return true }

// Maskable checks a value against GitLab's masking rules for a raw variable.
func Maskable(v string) error {
	switch {
	case len(v) < 8:
		return errors.New("shorter than 8 characters")
	case !maskRaw.MatchString(v):
		return errors.New("it holds white space")
	}
	return nil
}

type target struct {
	spec delivery.Spec
	g    *delivery.GitLabTarget
}

// root is /projects/:id or /groups/:id, the id being the URL-encoded path or a number.
func (t target) root() string {
	if t.g.Group != "" {
		return "/groups/" + url.PathEscape(t.g.Group)
	}
	return "/projects/" + url.PathEscape(t.g.Project)
}

func (t target) what() string {
	if t.g.Group != "" {
		return "the group " + t.g.Group
	}
	return "the project " + t.g.Project
}

// values are the variables to write for p, in order: the secret before the id.
func (t target) values(p delivery.Payload) [][2]string {
	if t.g.Names.JSON != "" {
		return [][2]string{{t.g.Names.JSON, delivery.JSON.Render(p.KeyID, p.Secret).Reveal()}}
	}
	return [][2]string{{t.g.Names.SecretAccessKey, p.Secret.Reveal()}, {t.g.Names.AccessKeyID, p.KeyID}}
}

// Stage implements delivery.Destination: the project or group is there and the token may read it,
// and every value can be masked if masked was asked.
func (d *Destination) Stage(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	t := target{s, s.GitLab}
	if err := d.checkMask(t, p); err != nil {
		return err
	}
	return d.call(ctx, t, http.MethodGet, t.root(), nil, nil)
}

func (d *Destination) checkMask(t target, p delivery.Payload) error {
	if !t.g.Masked {
		return nil
	}
	for _, v := range t.values(p) {
		if err := Maskable(v[1]); err != nil {
			return &MaskError{Target: t.spec.Key(), Variable: v[0], Why: err.Error()}
		}
	}
	return nil
}

// Publish implements delivery.Destination.
func (d *Destination) Publish(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	return d.write(ctx, target{s, s.GitLab}, p)
}

// Withdraw implements delivery.Destination: the old key is written back; without it (variables
// first written by this rotation) they are left as they are.
func (d *Destination) Withdraw(ctx context.Context, s delivery.Spec, _ delivery.Payload, old *delivery.Payload) error {
	if old == nil {
		return nil
	}
	return d.write(ctx, target{s, s.GitLab}, *old)
}

// Current implements delivery.Destination: the variables are read back.
func (d *Destination) Current(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	t := target{s, s.GitLab}
	got := map[string]string{}
	for _, name := range []string{t.g.Names.JSON, t.g.Names.AccessKeyID, t.g.Names.SecretAccessKey} {
		if name == "" {
			continue
		}
		var v variable
		err := d.call(ctx, t, http.MethodGet, t.root()+"/variables/"+url.PathEscape(name)+"?"+scopeFilter(t.g), nil, &v)
		var he *delivery.RefusedError
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			return delivery.Held{}, nil
		}
		if err != nil {
			return delivery.Held{}, err
		}
		got[name] = v.Value
	}
	if t.g.Names.JSON != "" {
		c := secret.New(got[t.g.Names.JSON])
		id, err := delivery.KeyID(c)
		if err != nil {
			return delivery.Held{}, fmt.Errorf("%s: %s does not hold a key in JSON", s.Key(), t.g.Names.JSON)
		}
		return delivery.Held{KeyID: id, Content: c}, nil
	}
	id := got[t.g.Names.AccessKeyID]
	return delivery.Held{KeyID: id, Content: delivery.JSON.Render(id, secret.New(got[t.g.Names.SecretAccessKey]))}, nil
}

// Forget implements delivery.Destination: a variable has no label to take off.
func (d *Destination) Forget(context.Context, delivery.Spec, string) error { return nil }

// variable is a CI/CD variable as the API reads and writes it.
type variable struct {
	Key              string `json:"key"`
	Value            string `json:"value"`
	VariableType     string `json:"variable_type"`
	Protected        bool   `json:"protected"`
	Masked           bool   `json:"masked"`
	Raw              bool   `json:"raw"`
	EnvironmentScope string `json:"environment_scope"`
}

func scopeFilter(g *delivery.GitLabTarget) string {
	return url.Values{"filter[environment_scope]": {g.EnvironmentScope}}.Encode()
}

// write updates each variable, or creates it where it is not there.
func (d *Destination) write(ctx context.Context, t target, p delivery.Payload) error {
	if err := d.checkMask(t, p); err != nil {
		return err
	}
	for _, kv := range t.values(p) {
		v := variable{Key: kv[0], Value: kv[1], VariableType: "env_var", Protected: t.g.Protected, Masked: t.g.Masked, Raw: true,
			EnvironmentScope: t.g.EnvironmentScope}
		err := d.call(ctx, t, http.MethodPut, t.root()+"/variables/"+url.PathEscape(kv[0])+"?"+scopeFilter(t.g), v, nil)
		var he *delivery.RefusedError
		if errors.As(err, &he) && he.Status == http.StatusNotFound && strings.Contains(he.Message, "Variable") {
			err = d.call(ctx, t, http.MethodPost, t.root()+"/variables", v, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *Destination) call(ctx context.Context, t target, method, path string, body, out any) error {
	token, err := d.token(t)
	if err != nil {
		return fmt.Errorf("%s: %w", t.spec.Key(), err)
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	base := strings.TrimSuffix(t.g.BaseURL, "/") + "/api/v4"
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", t.spec.Key(), err)
	}
	req.Header.Set("PRIVATE-TOKEN", token.Reveal())
	req.Header.Set("User-Agent", "keyward")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", t.spec.Key(), method, strings.SplitN(path, "?", 2)[0], err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return refusal(t, method, strings.SplitN(path, "?", 2)[0], resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: %s %s: GitLab's answer is not the JSON documented: %w", t.spec.Key(), method, path, err)
		}
	}
	return nil
}

// refusal turns an answer of 300 or more into a RefusedError that says what is missing. GitLab's
// message is a string ("404 Project Not Found") or, for a validation, fields with their problems
// ({"value": ["is invalid"]}); neither quotes a value.
func refusal(t target, method, path string, resp *http.Response, raw []byte) error {
	var m struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
	}
	_ = json.Unmarshal(raw, &m)
	msg := m.Error
	var s string
	var fields map[string][]string
	switch {
	case json.Unmarshal(m.Message, &s) == nil:
		msg = s
	case json.Unmarshal(m.Message, &fields) == nil:
		var parts []string
		for k, v := range fields {
			parts = append(parts, k+" "+strings.Join(v, ", "))
		}
		msg = strings.Join(parts, "; ")
	}
	e := &delivery.RefusedError{Service: "GitLab", Target: t.spec.Key(), Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	if resp.StatusCode == http.StatusTooManyRequests {
		e.Wait = time.Minute
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n >= 0 {
			e.Wait = time.Duration(n) * time.Second
		}
		e.Hint = fmt.Sprintf("rate limited; trying again in %s", e.Wait)
		return e
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Hint = "the token was refused: check token_file or token_env, and that it has not expired or been revoked"
	case http.StatusForbidden:
		e.Hint = "the token may not do this: it needs the api scope and the Maintainer role on " + t.what()
	case http.StatusNotFound:
		e.Hint = t.what() + " does not exist, was moved, or the token cannot see it (it needs the api scope and the Maintainer role)"
	case http.StatusBadRequest:
		if strings.Contains(msg, "value") && t.g.Masked {
			e.Hint = "GitLab would not take the value as a masked variable; nothing was written unmasked"
		} else {
			e.Hint = "GitLab refused the request's content"
		}
	default:
		if resp.StatusCode >= 500 {
			e.Hint = "GitLab is failing; trying again"
		}
	}
	return e
}

func (d *Destination) token(t target) (secret.Value, error) {
	if !t.g.Token.IsZero() {
		return t.g.Token, nil
	}
	return delivery.TokenFromFile(t.g.TokenFile)
}
