package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

const inventoryPageSize = 100

// teamsOf names the teams of each identity.
func (u *UI) teamsOf(ctx context.Context) (map[vault.Identity][]string, error) {
	teams, err := u.Auth.Teams(ctx)
	if err != nil {
		return nil, err
	}
	return auth.TeamsByIdentity(teams), nil
}

// inventoryPage lists every identity: keys, ages, state, next step; filtered, sorted, paged on the
// server; with a histogram of ages against the policy.
func (u *UI) inventoryPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	q := r.URL.Query()
	oq := report.OverviewQuery{Account: q.Get("account"), Team: q.Get("team"), State: q.Get("state"), Sort: q.Get("sort"), Asc: q.Get("asc") == "1",
		Limit: inventoryPageSize}
	if oq.State != "" && !slices.Contains(report.OverviewStates, oq.State) {
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Bad filter", "Message": "state " + strconv.Quote(oq.State) + ": want one of ok, rotating, held, blocked, failing, exempt"})
		return nil
	}
	pageNo, _ := strconv.Atoi(q.Get("page"))
	pageNo = max(pageNo, 1)
	oq.Offset = (pageNo - 1) * inventoryPageSize
	teams, err := u.teamsOf(r.Context())
	if err != nil {
		return err
	}
	pg, err := u.Reports.Overview(r.Context(), oq, teams)
	if err != nil {
		return err
	}
	link := func(changes ...string) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		for i := 0; i+1 < len(changes); i += 2 {
			if changes[i+1] == "" {
				v.Del(changes[i])
			} else {
				v.Set(changes[i], changes[i+1])
			}
		}
		return "/ui/inventory?" + v.Encode()
	}
	data := map[string]any{"Title": "Inventory", "Page": pg, "Q": oq, "PageNo": pageNo, "States": report.OverviewStates,
		"Hist": report.NewAgeChart(pg.Ages, report.ChartPolicy{RotateAfter: u.Reports.Policy.RotateAfter,
			DeactivateAfter: u.Reports.Policy.DeactivateAfter, DeleteAfter: u.Reports.Policy.DeleteAfter}),
		"SortAge":  link("sort", "", "asc", map[bool]string{true: "", false: "1"}[oq.Sort != "name" && !oq.Asc], "page", ""),
		"SortName": link("sort", "name", "asc", map[bool]string{true: "", false: "1"}[oq.Sort == "name" && oq.Asc], "page", "")}
	if oq.Offset+inventoryPageSize < pg.Total {
		data["Next"] = link("page", strconv.Itoa(pageNo+1))
	}
	if pageNo > 1 {
		data["Prev"] = link("page", strconv.Itoa(pageNo-1))
	}
	u.render(w, r, http.StatusOK, "inventory", s, data)
	return nil
}

// historyPage shows one identity's rotations, with their steps and outcome, and its audit records.
func (u *UI) historyPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: r.PathValue("account"), UserName: r.PathValue("user")}
	if err := id.Validate(); err != nil {
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Bad identity", "Message": err.Error()})
		return nil
	}
	h, ok := u.Reports.Rotations.(interface {
		History(ctx context.Context, id vault.Identity, limit int) ([]rotation.Record, error)
	})
	var recs []rotation.Record
	if ok {
		var err error
		if recs, err = h.History(r.Context(), id, 50); err != nil {
			return err
		}
	}
	events, _, err := u.Trail.Find(r.Context(), audit.Filter{Target: id.String(), Limit: 200, Newest: true})
	if err != nil {
		return err
	}
	var targets []delivery.TargetState
	if u.Access != nil && u.Access.Engine != nil {
		if targets, err = u.Access.Engine.TargetsOf(r.Context(), id); err != nil {
			return err
		}
	}
	u.render(w, r, http.StatusOK, "history", s, map[string]any{"Title": "History of " + id.UserName, "Identity": id, "Rotations": recs,
		"Events": events, "Targets": targets})
	return nil
}

// rotateNow starts a rotation of a team's key (operators, admins) and shows its progress.
func (u *UI) rotateNow(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	if r.PostFormValue("confirm") != "yes" {
		u.render(w, r, http.StatusOK, "confirm", s, map[string]any{"Title": "Confirm", "What": "Rotate the key of team " + r.PathValue("team") + " now",
			"ActionURL": "/ui/teams/" + url.PathEscape(r.PathValue("team")) + "/rotate"})
		return nil
	}
	id, err := u.Access.Rotate(r.Context(), s.principal, r.PathValue("team"))
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/rotations/"+strconv.FormatInt(id, 10), http.StatusSeeOther)
	return nil
}

// rotateIdentityNow starts a rotation of any managed identity's key (operators, admins), a team's
// or not, and shows its progress.
func (u *UI) rotateIdentityNow(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: r.PathValue("account"), UserName: r.PathValue("user")}
	if err := id.Validate(); err != nil {
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Bad identity", "Message": err.Error()})
		return nil
	}
	if r.PostFormValue("confirm") != "yes" {
		u.render(w, r, http.StatusOK, "confirm", s, map[string]any{"Title": "Confirm", "What": "Rotate the key of " + id.UserName + " in " + id.AccountID + " now",
			"ActionURL": "/ui/identities/" + url.PathEscape(id.AccountID) + "/" + url.PathEscape(id.UserName) + "/rotate"})
		return nil
	}
	n, err := u.Access.RotateIdentity(r.Context(), s.principal, id)
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/rotations/"+strconv.FormatInt(n, 10), http.StatusSeeOther)
	return nil
}

// rotationPage shows a rotation's progress; it refreshes itself until the rotation is finished.
func (u *UI) rotationPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	n, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || n <= 0 {
		u.render(w, r, http.StatusBadRequest, "error", s, map[string]any{"Title": "Bad rotation", "Message": "want a rotation number"})
		return nil
	}
	rec, err := u.Access.Rotation(r.Context(), s.principal, n)
	if err != nil {
		return err
	}
	data := map[string]any{"Title": "Rotation " + r.PathValue("id"), "R": rec, "Running": rec.FinishedAt.IsZero()}
	if rec.FinishedAt.IsZero() {
		data["Refresh"] = 2
	}
	u.render(w, r, http.StatusOK, "rotation", s, data)
	return nil
}
