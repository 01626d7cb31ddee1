package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/duration"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

// API is what the REST API serves from.
type API struct {
	Auth   *auth.Service
	Access *access.Service
	Vault  *vault.Vault
	Trail  *audit.Trail
	// OIDC, when set, signs users in through the configured provider.
	OIDC *OIDC
	// AllowedCIDRs, when set, are the only networks served (403 otherwise).
	AllowedCIDRs []netip.Prefix
	// TrustedProxies are the proxies whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// RatePerPrincipal and RatePerIP are requests per second (0: no limit).
	RatePerPrincipal, RatePerIP float64
	// Version is Keyward's version, for /v1/status.
	Version string
	// Targets, when set, lists every identity's delivery targets for /v1/status.
	Targets func(ctx context.Context) ([]rotation.IdentityTargets, error)
	// Cluster, when set, says which replica leads the scheduler and when the last pass finished.
	Cluster func(ctx context.Context) (cluster.Status, error)
	// Scheduler, when set, judges the rotation scheduler by its progress (GET /v1/status's scheduler).
	Scheduler func(ctx context.Context) (rotation.Health, error)
	// Inventory is the stored inventory (GET /v1/inventory); Reports the compliance report.
	Inventory inventory.Store
	Reports   *report.Service

	ipLimits, principalLimits *limiter
	denials                   *denials
}

func (a *API) init() {
	a.ipLimits, a.principalLimits = newLimiter(a.RatePerIP), newLimiter(a.RatePerPrincipal)
	a.denials = &denials{trail: a.Trail}
}

// authenticate finds the request's principal: a bearer token, or an API key in X-API-Key.
func (a *API) authenticate(r *http.Request) (*auth.Principal, error) {
	if a.Auth == nil {
		return nil, auth.ErrUnauthenticated
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return nil, fmt.Errorf("%w: want Authorization: Bearer TOKEN", auth.ErrUnauthenticated)
		}
		return a.Auth.Authenticate(r.Context(), strings.TrimSpace(token))
	}
	if k := r.Header.Get("X-API-Key"); k != "" {
		return a.Auth.AuthenticateAPIKey(r.Context(), k)
	}
	return nil, auth.ErrUnauthenticated
}

// maxBody bounds every request body.
const maxBody = 64 << 10

// decode reads a JSON request body into v, strictly: one object, known fields only. Its errors name
// the field at fault.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return badf("Content-Type %q: want application/json", ct)
		}
	}
	return decodeJSON(io.LimitReader(r.Body, maxBody+1), v)
}

// decodeJSON is decode's reader half, for the fuzz tests.
func decodeJSON(body io.Reader, v any) error {
	raw, err := io.ReadAll(body)
	if err != nil {
		return badf("body: %v", err)
	}
	if len(raw) > maxBody {
		return badf("body: larger than %d bytes", maxBody)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badf("body: want a JSON object, got nothing")
		case errors.As(err, &syn):
			return badf("body: not valid JSON at byte %d", syn.Offset)
		case errors.As(err, &typ) && typ.Field == "":
			return badf("body: want a JSON object, got a JSON %s", typ.Value)
		case errors.As(err, &typ):
			return badf("body.%s: want a JSON %s, got a JSON %s", typ.Field, jsonKind(typ.Type), typ.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return badf("body: unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return badf("body: %v", err)
	}
	if dec.More() {
		return badf("body: want one JSON object")
	}
	return nil
}

// jsonKind names a Go type as the JSON a client should send: never a Go type's name.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16,
		reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	}
	return "value of another kind"
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) error {
	writeJSON(w, status, v)
	return nil
}

// apiRoutes registers the REST API. Each route names its permission here, where it is registered.
func (s *server) apiRoutes() {
	a := s.api
	s.route("GET /.well-known/jwks.json", auth.Public, "The public keys that check Keyward's tokens", a.jwks)
	s.route("GET /v1/openapi.json", auth.Public, "This API's OpenAPI 3.1 document", serveOpenAPI)
	s.route("POST /v1/auth/login", auth.Public, "Log in with a password (and TOTP code): a token", a.login)
	s.route("POST /v1/auth/token", auth.Public, "Exchange an API key (X-API-Key) for a token", a.token)
	s.route("GET /v1/auth/oidc/login", auth.Public, "Start single sign-on: redirects to the identity provider", a.oidcLogin)
	s.route("GET /v1/auth/oidc/callback", auth.Public, "Finish single sign-on: a token", a.oidcCallback)
	s.route("POST /v1/auth/logout", auth.Authenticated, "Revoke every token of the caller", a.logout)
	s.route("GET /v1/me", auth.Authenticated, "Who the caller is", a.me)
	s.route("GET /v1/teams/{team}/credentials", auth.ReadCredentials, "A team's current key", a.credentials)
	s.route("POST /v1/teams/{team}/rotate", auth.Rotate, "Rotate a team's key now", a.rotate)
	s.route("GET /v1/rotations/{id}", auth.Rotate, "A rotation's progress", a.rotation)
	s.route("GET /v1/keys", auth.ReadInventory, "Every key Keyward holds, without secrets", a.keys)
	s.route("GET /v1/status", auth.ReadInventory, "Keyward's state in numbers", a.status)
	s.route("GET /v1/audit", auth.ReadAudit, "The audit trail, filtered and paged", a.audit)
	s.route("GET /v1/export", auth.Export, "Every team's current key (admin with MFA)", a.export)
	s.route("GET /v1/users", auth.Administer, "List users", a.listUsers)
	s.route("POST /v1/users", auth.Administer, "Add a user", a.addUser)
	s.route("DELETE /v1/users/{name}", auth.Administer, "Delete a user", a.deleteUser)
	s.route("GET /v1/teams", auth.Administer, "List teams", a.listTeams)
	s.route("POST /v1/teams", auth.Administer, "Add a team", a.addTeam)
	s.route("DELETE /v1/teams/{team}", auth.Administer, "Delete a team", a.deleteTeam)
	s.route("POST /v1/teams/{team}/members", auth.Administer, "Add a member to a team", a.addMember)
	s.route("GET /v1/apikeys", auth.Administer, "List API keys", a.listAPIKeys)
	s.route("POST /v1/apikeys", auth.Administer, "Create an API key", a.createAPIKey)
	s.route("DELETE /v1/apikeys/{name}", auth.Administer, "Revoke an API key", a.revokeAPIKey)
	s.route("POST /v1/leaks", auth.ReportLeak, "Report a key as exposed: it is replaced and deactivated at once", a.reportLeak)
	s.route("POST /v1/leaks/aws-health", auth.ReportLeak, "AWS Health's AWS_RISK_CREDENTIALS_EXPOSED event, as EventBridge sends it", a.awsHealthLeak)
	s.route("GET /v1/inventory", auth.ReadInventory, "Every IAM user of every account, managed or not (the last read)", a.inventory)
	s.route("GET /v1/reports/compliance", auth.ReadReports, "The compliance report (JSON, CSV or HTML)", a.compliance)
	s.route("GET /v1/reports/compliance/history", auth.ReadReports, "The compliance report's daily summaries", a.complianceHistory)
}

// inventory serves GET /v1/inventory[?account=ID] from the last read.
func (a *API) inventory(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	account := r.URL.Query().Get("account")
	if account != "" && vault.ValidateAccountID(account) != nil {
		return badf("account %q: want 12 digits", account)
	}
	out := []inventory.Account{}
	if a.Inventory == nil {
		return writeJSONStatus(w, http.StatusOK, map[string]any{"accounts": out})
	}
	accounts, err := a.Inventory.Accounts(r.Context())
	if err != nil {
		return err
	}
	for _, acc := range accounts {
		if account == "" || acc.ID == account {
			out = append(out, acc)
		}
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"accounts": out})
}

// compliance serves GET /v1/reports/compliance?format=json|csv|html&account=ID.
func (a *API) compliance(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	q := r.URL.Query()
	format := q.Get("format")
	write, ok := map[string]func(io.Writer, report.Report) error{"": report.WriteJSON, "json": report.WriteJSON, "csv": report.WriteCSV, "html": report.WriteHTML}[format]
	if !ok {
		return badf("format %q: want json, csv or html", format)
	}
	account := q.Get("account")
	if account != "" && vault.ValidateAccountID(account) != nil {
		return badf("account %q: want 12 digits", account)
	}
	if a.Reports == nil {
		return &access.Error{Kind: access.ErrUnavailable, Public: "no compliance report here: this server reads no inventory"}
	}
	rep, err := a.Reports.Compliance(r.Context(), account)
	if err != nil {
		return &access.Error{Kind: access.ErrUnavailable, Public: "no compliance report yet: " + err.Error()}
	}
	if rep.History, err = a.Reports.History(r.Context(), 90); err != nil {
		return err
	}
	w.Header().Set("Content-Type", map[string]string{"": "application/json", "json": "application/json", "csv": "text/csv; charset=utf-8",
		"html": "text/html; charset=utf-8"}[format])
	return write(w, rep)
}

// complianceHistory serves GET /v1/reports/compliance/history?days=N (1 to 366, default 90).
func (a *API) complianceHistory(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	days := 90
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 366 {
			return badf("days %q: want 1 to 366", v)
		}
		days = n
	}
	hist := []report.Summary{}
	if a.Reports != nil {
		var err error
		if hist, err = a.Reports.History(r.Context(), days); err != nil {
			return err
		}
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"days": hist})
}

type leakRequest struct {
	AccessKeyID         string `json:"access_key_id"`
	Reason              string `json:"reason"`
	DeactivateUnmanaged bool   `json:"deactivate_unmanaged"`
}

// reportLeak serves POST /v1/leaks.
func (a *API) reportLeak(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req leakRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Reason) > 1000 {
		return badf("reason: at most 1000 characters")
	}
	resp, err := a.Access.ReportLeak(r.Context(), p, req.AccessKeyID, req.Reason, "api", req.DeactivateUnmanaged)
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusOK, resp)
}

// healthEvent is the part of an AWS Health event (as EventBridge delivers it) that names exposed keys.
type healthEvent struct {
	Source     string `json:"source"`
	DetailType string `json:"detail-type"`
	Detail     struct {
		EventArn         string `json:"eventArn"`
		EventTypeCode    string `json:"eventTypeCode"`
		AffectedEntities []struct {
			EntityValue string `json:"entityValue"`
		} `json:"affectedEntities"`
	} `json:"detail"`
}

// awsHealthLeak serves POST /v1/leaks/aws-health: every key an AWS_RISK_CREDENTIALS_EXPOSED event
// names is reported. Other events are refused (400), so that a mis-routed rule is noticed.
func (a *API) awsHealthLeak(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(raw) > maxBody {
		return badf("body: unreadable or larger than %d bytes", maxBody)
	}
	var ev healthEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return badf("body: not an EventBridge event (JSON)")
	}
	if ev.Source != "aws.health" || ev.Detail.EventTypeCode != "AWS_RISK_CREDENTIALS_EXPOSED" {
		return badf("event %q from %q: only aws.health's AWS_RISK_CREDENTIALS_EXPOSED is a leak report", ev.Detail.EventTypeCode, ev.Source)
	}
	var out []rotation.LeakResponse
	for _, e := range ev.Detail.AffectedEntities {
		if !rotation.ValidKeyID(e.EntityValue) {
			continue // other entities (the user, the account) are not keys
		}
		resp, err := a.Access.ReportLeak(r.Context(), p, e.EntityValue, "AWS Health "+ev.Detail.EventTypeCode+" "+ev.Detail.EventArn, "aws-health", false)
		if err != nil {
			return err
		}
		out = append(out, resp)
	}
	if len(out) == 0 {
		return badf("detail.affectedEntities: no access key id in the event")
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"leaks": out})
}

func (a *API) jwks(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	raw, err := a.Auth.Tokens().JWKS(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=60")
	_, err = w.Write(raw)
	return err
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func writeToken(w http.ResponseWriter, t auth.Token) error {
	return writeJSONStatus(w, http.StatusOK, tokenResponse{Token: t.Token.Reveal(), ExpiresAt: t.ExpiresAt})
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TOTP     string `json:"totp"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	// A locked address is refused before its body is read.
	if wait, err := a.Auth.AddressLocked(r.Context(), clientIPOf(r).String()); err != nil {
		return err
	} else if wait > 0 {
		return &auth.LockedError{RetryAfter: wait}
	}
	var req loginRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return badf("body: username and password are required")
	}
	t, err := a.Auth.Login(r.Context(), req.Username, secret.New(req.Password), req.TOTP, clientIPOf(r).String())
	if err != nil {
		return err
	}
	return writeToken(w, t)
}

func (a *API) token(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	k := r.Header.Get("X-API-Key")
	if k == "" {
		return fmt.Errorf("%w: X-API-Key is required", auth.ErrUnauthenticated)
	}
	p, err := a.Auth.AuthenticateAPIKey(r.Context(), k)
	if err != nil {
		return err
	}
	if ip := clientIPOf(r); len(p.CIDRs) > 0 && !contains(p.CIDRs, ip) {
		return auth.ErrForbidden
	}
	t, err := a.Auth.TokenForAPIKey(r.Context(), p)
	if err != nil {
		return err
	}
	return writeToken(w, t)
}

func (a *API) logout(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := a.Auth.Logout(r.Context(), p); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) me(w http.ResponseWriter, _ *http.Request, p *auth.Principal) error {
	return writeJSONStatus(w, http.StatusOK, p)
}

// issued is what the credentials route hands out: a team's key, or a session made with it.
type issued struct {
	Team            string
	AccessKeyID     string
	SecretAccessKey secret.Value
	SessionToken    secret.Value // zero for a key
	Expiration      time.Time    // a session's expiry; a key's due rotation (zero when exempt)
}

// Credential formats: what consumers of a key read.
var formats = map[string]func(w http.ResponseWriter, c issued) error{
	"json": func(w http.ResponseWriter, c issued) error {
		return writeJSONStatus(w, http.StatusOK, credentialDoc(c, 0))
	},
	// The AWS CLI and SDKs run a credential_process and read this document from its output.
	"credential-process": func(w http.ResponseWriter, c issued) error {
		return writeJSONStatus(w, http.StatusOK, credentialDoc(c, 1))
	},
	"env": func(w http.ResponseWriter, c issued) error {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		text := "AWS_ACCESS_KEY_ID=" + c.AccessKeyID + "\nAWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey.Reveal() + "\n"
		if !c.SessionToken.IsZero() {
			text += "AWS_SESSION_TOKEN=" + c.SessionToken.Reveal() + "\n"
		}
		_, err := io.WriteString(w, text)
		return err
	},
	"ini": func(w http.ResponseWriter, c issued) error {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		text := "[" + c.Team + "]\naws_access_key_id = " + c.AccessKeyID + "\naws_secret_access_key = " + c.SecretAccessKey.Reveal() + "\n"
		if !c.SessionToken.IsZero() {
			text += "aws_session_token = " + c.SessionToken.Reveal() + "\n"
		}
		_, err := io.WriteString(w, text)
		return err
	},
}

type credentialDocument struct {
	Version         int    `json:"Version,omitempty"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string `json:"SessionToken,omitempty"`
	Expiration      string `json:"Expiration,omitempty"`
}

func credentialDoc(c issued, version int) credentialDocument {
	d := credentialDocument{Version: version, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey.Reveal(), SessionToken: c.SessionToken.Reveal()}
	if !c.Expiration.IsZero() {
		d.Expiration = c.Expiration.UTC().Format(time.RFC3339)
	}
	return d
}

// credentials serves GET /v1/teams/{team}/credentials?type=key|session&duration=D&format=F.
func (a *API) credentials(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "" {
		format = "json"
	}
	write, ok := formats[format]
	if !ok {
		return badf("format %q: want json, credential-process, env or ini", format)
	}
	team := r.PathValue("team")
	switch typ := q.Get("type"); typ {
	case "", access.TypeKey:
		if q.Has("duration") {
			return badf("duration: only for type=session")
		}
		c, err := a.Access.Credentials(r.Context(), p, team)
		if err != nil {
			return err
		}
		return write(w, issued{Team: c.Team, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Expiration: c.Expiration})
	case access.TypeSession:
		d := access.DefaultSessionDuration
		if v := q.Get("duration"); v != "" {
			parsed, err := duration.Parse(v)
			if err != nil || parsed < access.MinSessionDuration || parsed > access.MaxSessionDuration {
				return badf("duration %q: want %s to %s, such as 1h", v, access.MinSessionDuration, access.MaxSessionDuration)
			}
			d = parsed
		}
		c, err := a.Access.SessionCredentials(r.Context(), p, team, d)
		if err != nil {
			return err
		}
		return write(w, issued{Team: c.Team, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Expiration: c.Expiration})
	default:
		return badf("type %q: want key or session", typ)
	}
}

func (a *API) rotate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := a.Access.Rotate(r.Context(), p, r.PathValue("team"))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/rotations/"+strconv.FormatInt(id, 10))
	return writeJSONStatus(w, http.StatusAccepted, map[string]any{"rotation_id": id, "status": "started"})
}

func (a *API) rotation(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return badf("rotation id %q: want a positive whole number", r.PathValue("id"))
	}
	rec, err := a.Access.Rotation(r.Context(), p, id)
	if err != nil {
		return err
	}
	status := "running"
	if !rec.FinishedAt.IsZero() {
		status = rec.Outcome
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"rotation_id": rec.ID, "identity": rec.Identity, "status": status,
		"step": rec.Step, "phase": rec.Phase, "old_key_id": rec.OldKeyID, "new_key_id": rec.NewKeyID, "reason": rec.Reason,
		"attempt": rec.Attempt, "started_at": rec.StartedAt, "finished_at": nullTime(rec.FinishedAt)})
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func (a *API) keys(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	versions, err := a.Vault.List(r.Context())
	if err != nil {
		return err
	}
	if versions == nil {
		versions = []vault.Version{}
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"keys": versions})
}

func (a *API) status(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	versions, err := a.Vault.List(r.Context())
	if err != nil {
		return err
	}
	states := map[string]int{}
	for _, v := range versions {
		states[string(v.State)]++
	}
	teams, err := a.Auth.Teams(r.Context())
	if err != nil {
		return err
	}
	doc := map[string]any{"version": a.Version, "keys_by_state": states, "teams": len(teams)}
	if a.Targets != nil {
		targets, err := a.Targets(r.Context())
		if err != nil {
			return err
		}
		stale := 0
		for _, id := range targets {
			for _, t := range id.Targets {
				if !t.HoldsCurrent {
					stale++
				}
			}
		}
		if targets == nil {
			targets = []rotation.IdentityTargets{}
		}
		doc["delivery"] = map[string]any{"identities": targets, "stale_targets": stale}
	}
	if a.Scheduler != nil {
		h, err := a.Scheduler(r.Context())
		if err != nil {
			return err
		}
		doc["scheduler"] = h
	}
	if a.Cluster != nil {
		st, err := a.Cluster(r.Context())
		if err != nil {
			return err
		}
		doc["cluster"] = st
	}
	return writeJSONStatus(w, http.StatusOK, doc)
}

// audit serves the trail: GET /v1/audit?after=SEQ&limit=N&since=T&until=T&actor=&action=&target=.
func (a *API) audit(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Limit: 100}
	var err error
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseInt(v, 10, 64); err != nil || f.After < 0 {
			return badf("after %q: want a record number (0 or more)", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return badf("limit %q: want 1 to 1000", v)
		}
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return badf("%s %q: want an RFC 3339 time such as 2026-11-22T10:00:00Z", name, v)
			}
		}
	}
	recs, next, err := a.Trail.Find(r.Context(), f)
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []audit.Record{}
	}
	body := map[string]any{"records": recs}
	if next > 0 {
		body["next_after"] = next
	}
	return writeJSONStatus(w, http.StatusOK, body)
}

// export serves GET /v1/export?format=json|csv: every current key the vault holds.
func (a *API) export(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "csv" {
		return badf("format %q: want json or csv", format)
	}
	creds, err := a.Access.Export(r.Context(), p)
	if err != nil {
		return err
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		return access.WriteCSV(w, creds)
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"credentials": access.Documents(creds)})
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	users, err := a.Auth.Users(r.Context())
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"users": orEmpty(users)})
}

func orEmpty[T any](list []T) []T {
	if list == nil {
		return []T{}
	}
	return list
}

type userRequest struct {
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Teams    []string `json:"teams"`
	Password string   `json:"password"`
}

func (a *API) addUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req userRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return badf("body.role: %v", err)
	}
	if req.Password == "" {
		return badf("body.password: required")
	}
	u, err := a.Auth.AddUser(r.Context(), p.ID(), req.Name, role, req.Teams, secret.New(req.Password))
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusCreated, u)
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := a.Auth.DeleteUser(r.Context(), p.ID(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listTeams(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	teams, err := a.Auth.Teams(r.Context())
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"teams": orEmpty(teams)})
}

type teamRequest struct {
	Name        string `json:"name"`
	IAMUser     string `json:"iam_user"`
	AccountID   string `json:"account_id"`
	SessionOnly bool   `json:"session_only"`
}

func (a *API) addTeam(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req teamRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.IAMUser == "" || req.AccountID == "" {
		return badf("body: iam_user and account_id are required")
	}
	t, err := a.Auth.AddTeam(r.Context(), p.ID(), auth.Team{Name: req.Name,
		Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: req.AccountID, UserName: req.IAMUser}, SessionOnly: req.SessionOnly})
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusCreated, t)
}

func (a *API) deleteTeam(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := a.Auth.DeleteTeam(r.Context(), p.ID(), r.PathValue("team")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type memberRequest struct {
	Member string `json:"member"`
}

func (a *API) addMember(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req memberRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Member == "" {
		return badf("body.member: required (user:NAME or apikey:NAME)")
	}
	if err := a.Auth.AddMember(r.Context(), p.ID(), r.PathValue("team"), req.Member); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listAPIKeys(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	keys, err := a.Auth.APIKeys(r.Context())
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusOK, map[string]any{"apikeys": orEmpty(keys)})
}

type apiKeyRequest struct {
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	Teams   []string `json:"teams"`
	CIDRs   []string `json:"cidrs"`
	Expires string   `json:"expires"`
}

func (a *API) createAPIKey(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req apiKeyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return badf("body.role: %v", err)
	}
	var cidrs []netip.Prefix
	for i, c := range req.CIDRs {
		pre, err := auth.ParseCIDR(c)
		if err != nil {
			return badf("body.cidrs[%d]: %v", i, err)
		}
		cidrs = append(cidrs, pre)
	}
	ttl, err := auth.ParseKeyLifetime(req.Expires)
	if err != nil {
		return badf("body.expires %v", err)
	}
	k, value, err := a.Auth.CreateAPIKey(r.Context(), p.ID(), req.Name, role, req.Teams, cidrs, ttl)
	if err != nil {
		return err
	}
	return writeJSONStatus(w, http.StatusCreated, struct {
		auth.APIKey
		Key string `json:"key"`
	}{k, value.Reveal()})
}

func (a *API) revokeAPIKey(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := a.Auth.RevokeAPIKey(r.Context(), p.ID(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
