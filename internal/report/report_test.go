package report_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

const (
	acctA = "111111111111"
	acctB = "222222222222"
	day   = 24 * time.Hour
)

type world struct {
	t      *testing.T
	clock  *testenv.Clock
	cloud  *sim.Cloud
	db     *store.DB
	engine *rotation.Engine
}

// newWorld is two accounts: in A (read through per-user calls) a managed user (rotated by Keyward)
// and an exempt one; in B (read through its credential report) a console user without MFA, one with
// MFA, a user with two active keys Keyward does not know (blocked), and the root user holding a key.
func newWorld(t *testing.T, d testenv.Database) *world {
	w := &world{t: t, clock: testenv.NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))}
	w.cloud = sim.New(sim.WithClock(w.clock.Now))
	w.db = storetest.Open(t, d)
	v := storetest.Vault(t, w.db, w.clock.Now)
	w.engine = rotation.New(rotation.Engine{Cloud: w.cloud, Vault: v, Store: w.db.Rotations(), Policy: rotation.DefaultPolicy(), Owner: "t",
		Audit: audit.New(w.db.Audit(), w.clock.Now, nil), Now: w.clock.Now, Leaks: w.db.Leaks(),
		Sleep: func(context.Context, time.Duration) error { return nil }})
	return w
}

func (w *world) setUp() {
	c, now := w.cloud, w.clock.Now()
	c.AddUser(acctA, "managed-app", "/", nil)
	c.AddKey(acctA, "managed-app", now.Add(-100*day), cloud.KeyActive)
	c.AddUser(acctA, "exempt-app", "/", map[string]string{rotation.TagExempt: "true"})
	c.AddKey(acctA, "exempt-app", now.Add(-200*day), cloud.KeyActive)
	c.AddUser(acctB, "dana", "/people/", nil)
	c.SetConsole(acctB, "dana", true, now.Add(-4*day), 0)
	c.AddUser(acctB, "erin", "/people/", nil)
	c.AddUser(acctB, "legacy", "/", nil)
	c.AddKey(acctB, "legacy", now.Add(-10*day), cloud.KeyActive)
	c.AddKey(acctB, "legacy", now.Add(-5*day), cloud.KeyActive)
	c.SetRootKey(acctB, true)
	c.SetReportUnavailable(acctA) // account A is read through per-user calls
	// Keyward rotates managed-app (and adopts legacy's... no: two unknown active keys block it).
	if _, err := w.engine.Pass(context.Background(), rotation.PassOptions{}); err != nil {
		w.t.Fatal(err)
	}
	w.clock.Add(time.Hour)
	for _, k := range c.Keys(acctA, "managed-app") { // both used now
		_, _ = c.Verify(context.Background(), acctA, k.ID, k.Secret)
	}
	// 46 days on: erin signs in (MFA), the engine's passes retire managed-app's old key and find
	// legacy blocked again.
	w.clock.Add(46 * day)
	c.SetConsole(acctB, "erin", true, w.clock.Now().Add(-time.Hour), 1)
	for range 2 {
		if _, err := w.engine.Pass(context.Background(), rotation.PassOptions{}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *world) read() []inventory.Account {
	w.t.Helper()
	r := &inventory.Reader{Cloud: w.cloud, Reports: w.cloud, Policy: w.engine.Policy, Vault: w.engine.Vault, Now: w.clock.Now}
	accounts, err := r.Read(context.Background(), "", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, a := range accounts {
		if err := w.db.Inventory().SaveAccount(context.Background(), a); err != nil {
			w.t.Fatal(err)
		}
	}
	return accounts
}

func findings(r report.Report, user string) []string {
	var out []string
	for _, f := range r.Findings {
		if f.User == user {
			out = append(out, f.Control)
		}
	}
	slices.Sort(out)
	return out
}

func TestInventoryAndCompliance(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.setUp()
		accounts := w.read()
		if len(accounts) != 2 || accounts[0].Source != "api" || accounts[1].Source != "credential_report" {
			t.Fatalf("accounts: %+v", accounts)
		}
		users := map[string]inventory.User{}
		for _, a := range accounts {
			for _, u := range a.Users {
				users[u.Name] = u
			}
		}
		if u := users["managed-app"]; len(u.Keys) != 2 || u.ExemptBy != "" || !slices.ContainsFunc(u.Keys, func(k inventory.Key) bool { return k.VaultState == "current" }) {
			t.Fatalf("managed-app: %+v", u)
		}
		if u := users["exempt-app"]; u.ExemptBy != "tag keyward:exempt" || u.Keys[0].Managed {
			t.Fatalf("exempt-app: %+v", u)
		}
		if u := users["dana"]; !u.Console || u.MFA {
			t.Fatalf("dana (per-user calls): %+v", u)
		}
		if u := users[cloud.RootUser]; !u.Root || u.RootKeys != 1 || u.AccountID != acctB {
			t.Fatalf("root of B: %+v", u)
		}

		svc := &report.Service{Inventory: w.db.Inventory(), Snapshots: w.db.Inventory(), Trail: audit.New(w.db.Audit(), w.clock.Now, nil),
			Rotations: w.db.Rotations(), Vault: w.engine.Vault, Policy: w.engine.Policy, Now: w.clock.Now}
		r, err := svc.Compliance(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for user, want := range map[string][]string{
			cloud.RootUser: {"cis-1.4-root-access-key"},
			"dana":         {"cis-1.10-console-mfa", "cis-1.12-unused-credentials"}, // password last used 50 days ago
			"erin":         nil,                                                     // console with MFA, used an hour ago
			"exempt-app":   {"cis-1.12-unused-credentials", "cis-1.14-key-rotation", "keyward-exempt", "keyward-never-used"},
			"legacy":       {"cis-1.12-unused-credentials", "cis-1.12-unused-credentials", "cis-1.13-one-active-key", "keyward-blocked", "keyward-never-used", "keyward-never-used", "keyward-unowned", "keyward-unowned"},
			"managed-app":  {"cis-1.12-unused-credentials"}, // its new key, unused for 46 days; the old one retired
		} {
			if got := findings(r, user); !slices.Equal(got, want) {
				t.Errorf("%s: findings %v, want %v", user, got, want)
			}
		}
		if r.Summary.Users != 6 || r.Summary.Compliant != 1 || r.Summary.ByControl["cis-1.4-root-access-key"] != 1 {
			t.Fatalf("summary: %+v", r.Summary)
		}

		// Outputs: CSV rows, and a self-contained HTML page with the histogram.
		var buf bytes.Buffer
		if err := report.WriteCSV(&buf, r); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		if err != nil || len(rows) != len(r.Findings)+1 || rows[0][0] != "severity" {
			t.Fatalf("csv: %v %d rows", err, len(rows))
		}
		buf.Reset()
		if err := report.WriteHTML(&buf, r); err != nil {
			t.Fatal(err)
		}
		html := buf.String()
		for _, want := range []string{"<svg", "<style>", "Compliance report", "cis-1.4", "The root user has an access key"} {
			if want != "cis-1.4" && !strings.Contains(html, want) {
				t.Errorf("the HTML report lacks %q", want)
			}
		}
		if strings.Contains(html, "<script") || strings.Contains(html, "http://") || strings.Contains(html, "<link") {
			t.Error("the HTML report is not self-contained")
		}

		// The daily snapshot and its history.
		if _, err := svc.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		w.clock.Add(day)
		if _, err := svc.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
		hist, err := svc.History(context.Background(), 90)
		if err != nil || len(hist) != 2 || hist[0].Day >= hist[1].Day {
			t.Fatalf("history: %+v %v", hist, err)
		}
	})
}

// A report over a world where nothing is wrong has no finding.
func TestNothingToReport(t *testing.T) {
	w := newWorld(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")})
	w.cloud.AddUser(acctA, "fresh", "/", map[string]string{rotation.TagOwner: "team@example.com"})
	k := w.cloud.AddKey(acctA, "fresh", w.clock.Now().Add(-2*day), cloud.KeyActive)
	_, _ = w.cloud.Verify(context.Background(), acctA, k.ID, k.Secret)
	w.read()
	svc := &report.Service{Inventory: w.db.Inventory(), Snapshots: w.db.Inventory(), Trail: audit.New(w.db.Audit(), w.clock.Now, nil),
		Rotations: w.db.Rotations(), Vault: w.engine.Vault, Policy: w.engine.Policy, Now: w.clock.Now}
	r, err := svc.Compliance(context.Background(), "")
	if err != nil || len(r.Findings) != 0 || r.Summary.Percent != 100 {
		t.Fatalf("findings: %+v %v", r.Findings, err)
	}
	_ = vault.StateCurrent
}

// The engine's own findings, from Build's facts alone: overdue (unless a rotation is open), held,
// failing — each present where the facts say so and absent where not.
func TestPolicyFindings(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	user := func(name string, age time.Duration) inventory.User {
		return inventory.User{AccountID: acctA, Name: name, Teams: []string{"t"}, Keys: []inventory.Key{{AccessKeyID: "AKIA" + strings.ToUpper(name),
			Status: "Active", CreatedAt: now.Add(-age), LastUsed: now.Add(-time.Hour), Managed: true, VaultState: "current"}}}
	}
	f := report.Facts{Policy: rotation.DefaultPolicy(), Now: now, Accounts: []inventory.Account{{ID: acctA, ReadAt: now, Users: []inventory.User{
		user("late", 95*day), user("rotating", 95*day), user("young", 10*day), user("held", 10*day), user("failing", 95*day)}}},
		Held:     map[string]string{"aws:" + acctA + ":held": "old key used yesterday"},
		Failing:  map[string]string{"aws:" + acctA + ":failing": "verification failed"},
		Blocked:  map[string]string{},
		Rotating: map[string]bool{"aws:" + acctA + ":rotating": true}}
	r := report.Build(f)
	for name, want := range map[string][]string{
		"late":     {"cis-1.14-key-rotation", "keyward-overdue"},
		"rotating": {"cis-1.14-key-rotation"},
		"young":    nil,
		"held":     {"keyward-held"},
		"failing":  {"cis-1.14-key-rotation", "keyward-failing"},
	} {
		if got := findings(r, name); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

// The overview's page by age, cut in SQL, on both databases: the oldest keys first, the right
// total, every age for the histogram, the exempt users after the managed ones.
func TestOverviewByAge(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		ctx := context.Background()
		for i := range 25 {
			id := vault.Identity{Cloud: vault.CloudAWS, AccountID: acctA, UserName: fmt.Sprintf("svc-%02d", i)}
			if _, err := w.engine.Vault.Adopt(ctx, id, fmt.Sprintf("AKIA%016d", i), w.clock.Now().Add(-time.Duration(i)*day)); err != nil {
				t.Fatal(err)
			}
		}
		w.cloud.AddUser(acctA, "break-glass", "/", map[string]string{rotation.TagExempt: "true"})
		w.read()
		svc := &report.Service{Inventory: w.db.Inventory(), Snapshots: w.db.Inventory(), Trail: audit.New(w.db.Audit(), w.clock.Now, nil),
			Rotations: w.db.Rotations(), Vault: w.engine.Vault, Policy: w.engine.Policy, Now: w.clock.Now}
		pg, err := svc.Overview(ctx, report.OverviewQuery{Offset: 20, Limit: 10}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range pg.Rows {
			names = append(names, r.Identity.UserName+"/"+r.State)
		}
		if pg.Total != 26 || len(pg.Ages) != 25 || strings.Join(names, " ") != "svc-04/ok svc-03/ok svc-02/ok svc-01/ok svc-00/ok break-glass/exempt" {
			t.Fatalf("page 3 by age: total %d, %d ages, %v", pg.Total, len(pg.Ages), names)
		}
		young, err := svc.Overview(ctx, report.OverviewQuery{Asc: true, Limit: 2}, nil)
		if err != nil || young.Rows[0].Identity.UserName != "svc-00" || young.Rows[1].Identity.UserName != "svc-01" {
			t.Fatalf("youngest first: %+v %v", young.Rows, err)
		}
		// The same identities by the other path (a state filter reads every identity).
		ok, err := svc.Overview(ctx, report.OverviewQuery{State: report.StateOK, Limit: 100}, nil)
		if err != nil || ok.Total != 25 || ok.Rows[0].Identity.UserName != "svc-24" {
			t.Fatalf("state ok: %d rows, first %+v %v", ok.Total, ok.Rows[0].Identity, err)
		}
	})
}

// TestPathScopedPermissions (issue 25 §2): Keyward's IAM policy is scoped to users under /ci/, as
// deploy/iam's member policy with UserPath /ci/ is; the simulated cloud enforces it (a per-user call
// about another user is refused, its tags cannot be listed). Without aws.user_path the pass still
// rotates the /ci/ users, reports keyward-admin as outside Keyward's permissions (naming the refused
// action) and lists the account without error; the plan, the inventory and the compliance report
// say the same. With aws.user_path /ci/ (ListUsers' PathPrefix), keyward-admin is not listed at all.
func TestPathScopedPermissions(t *testing.T) {
	for _, userPath := range []string{"", "/ci/"} {
		t.Run("user_path="+userPath, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				w := newWorld(t, d)
				w.cloud = sim.New(sim.WithClock(w.clock.Now), sim.WithPolicyPath("/ci/"), sim.WithUserPath(userPath))
				w.engine.Cloud = w.cloud
				now := w.clock.Now()
				for _, u := range []struct{ name, path string }{{"deploy", "/ci/"}, {"build", "/ci/"}, {"keyward-admin", "/"}} {
					w.cloud.AddUser(acctA, u.name, u.path, nil)
					w.cloud.AddKey(acctA, u.name, now.Add(-100*day), cloud.KeyActive)
				}
				rep, err := w.engine.Pass(context.Background(), rotation.PassOptions{})
				if err != nil || len(rep.Errors) > 0 || rep.Summary.Rotated != 2 {
					t.Fatalf("user_path %q: pass %+v, %v", userPath, rep, err)
				}
				plans, errs := w.engine.PlanPass(context.Background(), rotation.PassOptions{})
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				accounts := w.read()
				svc := &report.Service{Inventory: w.db.Inventory(), Snapshots: w.db.Inventory(), Trail: audit.New(w.db.Audit(), w.clock.Now, nil),
					Rotations: w.db.Rotations(), Vault: w.engine.Vault, Policy: w.engine.Policy, Now: w.clock.Now}
				r, err := svc.Compliance(context.Background(), "")
				if err != nil {
					t.Fatal(err)
				}
				if userPath != "" {
					listed := slices.DeleteFunc(slices.Clone(accounts[0].Users), func(u inventory.User) bool { return u.Root })
					if rep.Summary.Scanned != 2 || len(plans) != 2 || len(listed) != 2 || findings(r, "keyward-admin") != nil {
						t.Fatalf("with aws.user_path /ci/, keyward-admin was listed: %+v %+v", rep.Summary, plans)
					}
					return
				}
				if rep.Summary.Denied != 1 || rep.Summary.Failed != 0 {
					t.Fatalf("summary: %+v", rep.Summary)
				}
				for _, res := range rep.Users {
					if res.Identity.UserName == "keyward-admin" && (res.Outcome != rotation.Denied || !strings.Contains(res.Reason, "iam:ListUserTags")) {
						t.Fatalf("keyward-admin's result: %+v", res)
					}
				}
				for _, p := range plans {
					if p.Identity.UserName == "keyward-admin" && (p.State != rotation.PlanDenied || !strings.Contains(p.Reason, "outside Keyward's permissions")) {
						t.Fatalf("keyward-admin's plan: %+v", p)
					}
				}
				var admin inventory.User
				for _, u := range accounts[0].Users {
					if u.Name == "keyward-admin" {
						admin = u
					}
				}
				if admin.Denied != "iam:ListUserTags" {
					t.Fatalf("keyward-admin in the inventory: %+v", admin)
				}
				if got := findings(r, "keyward-admin"); !slices.Equal(got, []string{"keyward-outside-permissions"}) {
					t.Fatalf("keyward-admin's findings: %v", got)
				}
				for _, f := range r.Findings {
					if f.User == "keyward-admin" && !strings.Contains(f.Evidence, "iam:ListUserTags") {
						t.Fatalf("the finding does not name the missing action: %+v", f)
					}
				}
				// The rotated users' keys are what the policy allowed.
				for _, u := range []string{"deploy", "build"} {
					if n := len(w.cloud.Keys(acctA, u)); n != 2 {
						t.Fatalf("%s holds %d keys after its rotation, want 2", u, n)
					}
				}
			})
		})
	}
}
