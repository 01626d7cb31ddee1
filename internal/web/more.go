package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

// auditFilter reads the audit page's filters, as the API's GET /v1/audit takes them.
func auditFilter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Limit: 50}
	switch order := q.Get("order"); order {
	case "", "newest":
		f.Newest = true
	case "oldest":
	default:
		return f, fmt.Errorf("order %q: want newest or oldest", order)
	}
	for name, dst := range map[string]*int64{"after": &f.After, "before": &f.Before} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return f, fmt.Errorf("%s %q: want a record number", name, v)
			}
			*dst = n
		}
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse("2006-01-02", v)
			if err != nil {
				return f, fmt.Errorf("%s %q: want a date such as 2026-11-30", name, v)
			}
			if name == "until" {
				t = t.Add(24 * time.Hour)
			}
			*dst = t
		}
	}
	return f, nil
}

// withParam is q encoded with name set to value ("" removes it); q itself is unchanged.
func withParam(q url.Values, name, value string) string {
	c := make(url.Values, len(q)+1)
	for k, v := range q {
		c[k] = v
	}
	if value == "" {
		c.Del(name)
	} else {
		c.Set(name, value)
	}
	return c.Encode()
}

// auditPage shows a page of the trail, filtered.
func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	f, err := auditFilter(r)
	if err != nil {
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Bad filter", "Message": err.Error()})
		return nil
	}
	recs, next, err := u.Trail.Find(r.Context(), f)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	q.Del("after")
	q.Del("before")
	nextURL := ""
	if next > 0 {
		nextURL = "/ui/audit?" + withParam(q, map[bool]string{true: "before", false: "after"}[f.Newest], strconv.FormatInt(next, 10))
	}
	u.render(w, r, http.StatusOK, "audit", s, map[string]any{"Title": "Audit trail", "Records": recs, "Next": nextURL,
		"Filter": f, "Query": q, "Export": "/ui/audit/export?" + withParam(q, "order", ""), "Since": q.Get("since"), "Until": q.Get("until"),
		"Toggle": "/ui/audit?" + withParam(q, "order", map[bool]string{true: "oldest", false: "newest"}[f.Newest])})
	return nil
}

// auditVerify checks the whole trail's chain and signed checkpoints, as keyward audit verify does.
func (u *UI) auditVerify(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	keys, err := u.Vault.PublicSigningKeys(r.Context(), vault.PurposeAudit)
	if err != nil {
		return err
	}
	rep, err := u.Trail.Verify(r.Context(), audit.Ed25519Verifier(vault.PublicKeys(keys)), nil)
	if err != nil {
		return err
	}
	f, _ := auditFilter(r)
	recs, next, err := u.Trail.Find(r.Context(), f)
	if err != nil {
		return err
	}
	nextURL := ""
	if next > 0 {
		nextURL = "/ui/audit?before=" + strconv.FormatInt(next, 10)
	}
	u.render(w, r, http.StatusOK, "audit", s, map[string]any{"Title": "Audit trail", "Records": recs, "Next": nextURL, "Filter": f,
		"Verified": true, "Report": rep, "Export": "/ui/audit/export", "Toggle": "/ui/audit?order=oldest"})
	return nil
}

// auditExport sends the filtered trail as JSON lines, every page of it.
func (u *UI) auditExport(w http.ResponseWriter, r *http.Request, _ *signedIn) error {
	f, err := auditFilter(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil
	}
	f.Newest, f.Before = false, 0 // an export is in the trail's order, as a verifier reads it
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Disposition", `attachment; filename="keyward-audit.jsonl"`)
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	f.Limit = 1000
	for {
		recs, next, err := u.Trail.Find(r.Context(), f)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if err := enc.Encode(rec); err != nil {
				return nil // the client went away
			}
		}
		if next == 0 {
			return nil
		}
		f.After = next
	}
}

// reportsExist says whether there is a compliance report to show (the inventory was read).
func (u *UI) reportsExist(r *http.Request) bool {
	if u.Reports == nil {
		return false
	}
	accounts, err := u.Reports.Inventory.Accounts(r.Context())
	return err == nil && len(accounts) > 0
}

// reportsPage shows the compliance report and its trend.
func (u *UI) reportsPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	if !u.reportsExist(r) {
		u.render(w, r, http.StatusNotFound, "error", s, map[string]any{"Title": "No report yet",
			"Message": "There is no compliance report until the inventory has been read (keyward inventory --refresh, or serve's daily read)."})
		return nil
	}
	rep, err := u.Reports.Compliance(r.Context(), "")
	if err != nil {
		return err
	}
	hist, err := u.Reports.History(r.Context(), 90)
	if err != nil {
		return err
	}
	u.render(w, r, http.StatusOK, "reports", s, map[string]any{"Title": "Compliance", "R": rep, "Trend": trend(hist)})
	return nil
}

// trendPoint is one day of the trend chart.
type trendPoint struct {
	X, Y    int
	Day     string
	Percent float64
}

// trend lays the daily compliance percentages out for an SVG polyline (600 × 160).
func trend(hist []report.Summary) map[string]any {
	var pts []trendPoint
	var line []string
	for i, h := range hist {
		x := 40
		if len(hist) > 1 {
			x = 40 + i*540/(len(hist)-1)
		}
		y := 10 + int((100-h.Percent)*140/100)
		pts = append(pts, trendPoint{X: x, Y: y, Day: h.Day, Percent: h.Percent})
		line = append(line, fmt.Sprintf("%d,%d", x, y))
	}
	return map[string]any{"Points": pts, "Line": strings.Join(line, " ")}
}

// reportDownload sends the self-contained HTML report as a file (its own inline style is allowed
// for it alone; it has no script).
func (u *UI) reportDownload(w http.ResponseWriter, r *http.Request, _ *signedIn) error {
	if !u.reportsExist(r) {
		http.NotFound(w, r)
		return nil
	}
	rep, err := u.Reports.Compliance(r.Context(), "")
	if err != nil {
		return err
	}
	if rep.History, err = u.Reports.History(r.Context(), 90); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="keyward-compliance-`+rep.Summary.Day+`.html"`)
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	return report.WriteHTML(w, rep)
}

// adminPage lists users, teams and API keys, with forms to change them.
func (u *UI) adminPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	users, err := u.Auth.Users(r.Context())
	if err != nil {
		return err
	}
	teams, err := u.Auth.Teams(r.Context())
	if err != nil {
		return err
	}
	keys, err := u.Auth.APIKeys(r.Context())
	if err != nil {
		return err
	}
	u.render(w, r, http.StatusOK, "admin", s, map[string]any{"Title": "Administration", "Users": users, "Teams": teams, "Keys": keys,
		"Roles": auth.Roles, "Notice": r.URL.Query().Get("done")})
	return nil
}

// adminActions are what the administration page does, each confirmed on a page of its own first.
var adminActions = map[string]string{
	"add-user": "Add user", "disable-user": "Disable user", "reset-mfa": "Give a new authenticator seed to",
	"add-team": "Add team", "add-member": "Add a member to team", "create-key": "Create API key", "revoke-key": "Revoke API key",
}

// adminAction asks for confirmation (a first POST), then does it (the second, with confirm=yes).
func (u *UI) adminAction(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	action := r.PathValue("action")
	title, ok := adminActions[action]
	if !ok {
		u.render(w, r, http.StatusNotFound, "error", s, map[string]any{"Title": "Not found", "Message": "No such action."})
		return nil
	}
	form := map[string]string{}
	for _, k := range []string{"name", "role", "teams", "password", "team", "member", "iam_user", "account_id", "cidrs", "expires"} {
		form[k] = strings.TrimSpace(r.PostFormValue(k))
	}
	if r.PostFormValue("confirm") != "yes" {
		var fields []map[string]string
		for _, k := range []string{"name", "role", "teams", "team", "member", "iam_user", "account_id", "cidrs", "expires"} {
			if form[k] != "" {
				fields = append(fields, map[string]string{"Key": k, "Value": form[k]})
			}
		}
		u.render(w, r, http.StatusOK, "confirm", s, map[string]any{"Title": "Confirm", "Action": action, "What": title, "Fields": fields,
			"Form": form})
		return nil
	}
	ctx, actor := r.Context(), s.principal.ID()
	done := title + " " + form["name"] + form["team"]
	var err error
	switch action {
	case "add-user":
		var role auth.Role
		if role, err = auth.ParseRole(form["role"]); err == nil {
			_, err = u.Auth.AddUser(ctx, actor, form["name"], role, splitList(form["teams"]), secret.New(form["password"]))
		}
	case "disable-user":
		err = u.Auth.DisableUser(ctx, actor, form["name"])
	case "reset-mfa":
		var uri secret.Value
		if uri, err = u.Auth.EnrollMFA(ctx, actor, form["name"]); err == nil {
			u.render(w, r, http.StatusOK, "created", s, map[string]any{"Title": "New authenticator seed", "What": "the authenticator of " + form["name"],
				"Secret": uri, "Hint": "Give this otpauth:// address to " + form["name"] + " (their app reads it as a QR code or pasted); it is shown once."})
			return nil
		}
	case "add-team":
		_, err = u.Auth.AddTeam(ctx, actor, auth.Team{Name: form["team"], Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: form["account_id"], UserName: form["iam_user"]}})
	case "add-member":
		err = u.Auth.AddMember(ctx, actor, form["team"], form["member"])
	case "create-key":
		var key secret.Value
		if key, err = u.createKey(ctx, actor, form); err == nil {
			u.render(w, r, http.StatusOK, "created", s, map[string]any{"Title": "API key created", "What": "API key " + form["name"],
				"Secret": key, "Hint": "Copy it now: it is shown once, and only its hash is kept."})
			return nil
		}
	case "revoke-key":
		err = u.Auth.RevokeAPIKey(ctx, actor, form["name"])
	}
	if err != nil {
		if !errors.Is(err, auth.ErrInvalid) && !errors.Is(err, auth.ErrExists) && !errors.Is(err, auth.ErrNotFound) && !errors.Is(err, auth.ErrLastAdmin) {
			return err // not the principal's mistake: logged, and an internal error page
		}
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Not done", "Message": err.Error()})
		return nil
	}
	http.Redirect(w, r, "/ui/admin?done="+url.QueryEscape(done), http.StatusSeeOther)
	return nil
}

// createKey reads the form's role, teams, networks and lifetime as the API reads them, and creates
// the API key.
func (u *UI) createKey(ctx context.Context, actor string, form map[string]string) (secret.Value, error) {
	role, err := auth.ParseRole(form["role"])
	if err != nil {
		return secret.Value{}, err
	}
	var cidrs []netip.Prefix
	for _, c := range splitList(form["cidrs"]) {
		p, err := auth.ParseCIDR(c)
		if err != nil {
			return secret.Value{}, fmt.Errorf("cidrs: %w", err)
		}
		cidrs = append(cidrs, p)
	}
	ttl, err := auth.ParseKeyLifetime(form["expires"])
	if err != nil {
		return secret.Value{}, fmt.Errorf("expires %w", err)
	}
	_, key, err := u.Auth.CreateAPIKey(ctx, actor, form["name"], role, splitList(form["teams"]), cidrs, ttl)
	return key, err
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
