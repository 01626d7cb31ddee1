// Package report builds the compliance report over the inventory: the CIS AWS Foundations controls
// on access keys and console users, and Keyward's own policy (overdue, held, blocked, failing, exempt,
// unowned and never-used keys). Each finding names the identity, the evidence, a severity and the
// remedy in one sentence; a summary counts findings per control and the share of compliant users.
// The report reads nothing itself: its facts are given.
package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/rotation"
)

// Severities, most serious first.
const (
	Critical = "critical"
	High     = "high"
	Medium   = "medium"
	Low      = "low"
	Info     = "info"
)

var severityRank = map[string]int{Critical: 0, High: 1, Medium: 2, Low: 3, Info: 4}

// Control is one check of the report.
type Control struct {
	ID       string `json:"id"`
	Source   string `json:"source"` // "CIS AWS Foundations 1.14", "Keyward policy"
	Title    string `json:"title"`
	Severity string `json:"severity"`
	Remedy   string `json:"remedy"`
}

// The controls, in the order the report lists them.
var (
	RootAccessKey     = Control{"cis-1.4-root-access-key", "CIS AWS Foundations 1.4", "The root user has an access key", Critical, "Delete the root user's access keys; use IAM roles or users instead."}
	ConsoleWithoutMFA = Control{"cis-1.10-console-mfa", "CIS AWS Foundations 1.10", "Console user without MFA", High, "Enable an MFA device for the user, or remove its console password."}
	UnusedCredentials = Control{"cis-1.12-unused-credentials", "CIS AWS Foundations 1.12", "Credentials unused for 45 days or more", Medium, "Deactivate them: keyward remediate unused --older-than 45d."}
	TwoActiveKeys     = Control{"cis-1.13-one-active-key", "CIS AWS Foundations 1.13", "More than one active access key", Medium, "Keep one: deactivate the other once nothing uses it (Keyward does so after a rotation)."}
	NotRotated        = Control{"cis-1.14-key-rotation", "CIS AWS Foundations 1.14", "Access key not rotated within 90 days", High, "Rotate it: manage the user with Keyward, or keyward rotate --once --user NAME --force."}
	Overdue           = Control{"keyward-overdue", "Keyward policy", "Past rotate_after and not rotating", High, "Find why in keyward status and the log; keyward rotate --once --user NAME --force."}
	Held              = Control{"keyward-held", "Keyward policy", "Old key still in use after its replacement", Medium, "Move the programs that use the old key to the new one (or set rotation.force_deactivate)."}
	Blocked           = Control{"keyward-blocked", "Keyward policy", "Rotation blocked", High, "Delete or deactivate the key Keyward may not touch so that it can make room, or exempt the user."}
	Failing           = Control{"keyward-failing", "Keyward policy", "Last rotation failed", High, "Read the reason and the log; Keyward tries again with backoff."}
	Exempt            = Control{"keyward-exempt", "Keyward policy", "Exempt from rotation", Info, "Review the exemption; remove it when the key can be rotated."}
	Unowned           = Control{"keyward-unowned", "Keyward policy", "Unmanaged key with no owner team", Medium, "Give the user a Keyward team (keyward team add) or a keyward:owner tag, or delete the key."}
	NeverUsed         = Control{"keyward-never-used", "Keyward policy", "Key never used", Low, "Delete it if nothing needs it."}
	OutsidePerms      = Control{"keyward-outside-permissions", "Keyward policy", "Outside Keyward's permissions", Medium, "Set aws.user_path to the path Keyward's IAM policy is scoped to (deploy/iam's UserPath), or grant the refused action."}
)

// Controls lists every control.
var Controls = []Control{RootAccessKey, ConsoleWithoutMFA, UnusedCredentials, TwoActiveKeys, NotRotated, Overdue, Held, Blocked, Failing, Exempt, Unowned, NeverUsed, OutsidePerms}

// Finding is one control failed by one identity.
type Finding struct {
	Control  string `json:"control"`
	Source   string `json:"source"`
	Title    string `json:"title"`
	Severity string `json:"severity"`
	Account  string `json:"account"`
	User     string `json:"user"`
	KeyID    string `json:"access_key_id,omitempty"`
	Evidence string `json:"evidence"`
	Remedy   string `json:"remedy"`
}

// Summary counts a report's findings.
type Summary struct {
	Day        string         `json:"day"`
	Users      int            `json:"users"`     // IAM users, and each account's root user
	Compliant  int            `json:"compliant"` // with no finding of medium severity or worse
	Percent    float64        `json:"percent"`
	ByControl  map[string]int `json:"by_control"`
	BySeverity map[string]int `json:"by_severity"`
}

// Report is the compliance report.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	// InventoryReadAt is when the oldest account of the inventory was read.
	InventoryReadAt time.Time  `json:"inventory_read_at"`
	Accounts        []string   `json:"accounts"`
	Policy          PolicyDays `json:"policy"`
	Summary         Summary    `json:"summary"`
	Findings        []Finding  `json:"findings"`
	KeyAges         []int      `json:"key_ages_days"` // every active key's age, for the histogram
	Controls        []Control  `json:"controls"`
	History         []Summary  `json:"history,omitempty"`

	ages []time.Duration // KeyAges to the second, for the HTML report's chart
}

// PolicyDays is the policy's deadlines, in days, for the histogram.
type PolicyDays struct {
	RotateAfter     float64 `json:"rotate_after_days"`
	DeactivateAfter float64 `json:"deactivate_after_days"`
	DeleteAfter     float64 `json:"delete_after_days"`
}

// chart is the policy's deadlines for the age chart.
func (p PolicyDays) chart() ChartPolicy {
	d := func(days float64) time.Duration { return time.Duration(days * float64(day)) }
	return ChartPolicy{RotateAfter: d(p.RotateAfter), DeactivateAfter: d(p.DeactivateAfter), DeleteAfter: d(p.DeleteAfter)}
}

// Facts are what the report is built from.
type Facts struct {
	Accounts []inventory.Account
	Policy   rotation.Policy
	Now      time.Time
	// Held, Blocked and Failing are the engine's latest word on identities (by identity string
	// aws:ACCOUNT:USER): the evidence to show.
	Held, Blocked, Failing map[string]string
	// Rotating are the identities with a rotation open now (not overdue, whatever the key's age).
	Rotating map[string]bool
}

const day = 24 * time.Hour

// Build makes the report. It reads nothing.
func Build(f Facts) Report {
	r := Report{GeneratedAt: f.Now.UTC(), Controls: Controls, Findings: []Finding{}, KeyAges: []int{},
		Policy: PolicyDays{f.Policy.RotateAfter.Hours() / 24, f.Policy.DeactivateAfter.Hours() / 24, f.Policy.DeleteAfter.Hours() / 24}}
	bad := map[string]bool{} // users with a finding of medium or worse
	users := 0
	for _, a := range f.Accounts {
		r.Accounts = append(r.Accounts, a.ID)
		if r.InventoryReadAt.IsZero() || a.ReadAt.Before(r.InventoryReadAt) {
			r.InventoryReadAt = a.ReadAt
		}
		for _, u := range a.Users {
			users++
			before := len(r.Findings)
			r.Findings = append(r.Findings, checkUser(f, u)...)
			for _, fd := range r.Findings[before:] {
				if severityRank[fd.Severity] <= severityRank[Medium] {
					bad[a.ID+"/"+u.Name] = true
				}
			}
			for _, k := range u.Keys {
				if k.Status == string(cloud.KeyActive) {
					r.KeyAges = append(r.KeyAges, int(f.Now.Sub(k.CreatedAt)/day))
					r.ages = append(r.ages, f.Now.Sub(k.CreatedAt))
				}
			}
		}
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		if d := severityRank[a.Severity] - severityRank[b.Severity]; d != 0 {
			return d
		}
		return strings.Compare(a.Account+a.User, b.Account+b.User)
	})
	r.Summary = summarize(f.Now, users, users-len(bad), r.Findings)
	return r
}

func summarize(now time.Time, users, compliant int, fs []Finding) Summary {
	s := Summary{Day: now.UTC().Format(time.DateOnly), Users: users, Compliant: compliant, ByControl: map[string]int{}, BySeverity: map[string]int{}}
	for _, c := range Controls {
		s.ByControl[c.ID] = 0
	}
	for _, f := range fs {
		s.ByControl[f.Control]++
		s.BySeverity[f.Severity]++
	}
	s.Percent = 100
	if users > 0 {
		s.Percent = float64(int(float64(compliant)*1000/float64(users))) / 10
	}
	return s
}

// checkUser is every control on one user.
func checkUser(f Facts, u inventory.User) []Finding {
	c := &userCheck{f: f, u: u}
	if u.Root {
		if u.RootKeys > 0 {
			c.add(RootAccessKey, "", fmt.Sprintf("%d active access key(s) on the root user", u.RootKeys))
		}
		return c.out
	}
	if u.Denied != "" {
		// Keyward could not read this user: nothing else about it can be judged.
		c.add(OutsidePerms, "", u.Denied+" was refused to Keyward for this user")
		return c.out
	}
	c.credentials()
	c.policy()
	return c.out
}

// userCheck gathers one IAM user's findings.
type userCheck struct {
	f   Facts
	u   inventory.User
	out []Finding
}

func (c *userCheck) add(ctl Control, keyID, evidence string) {
	c.out = append(c.out, Finding{Control: ctl.ID, Source: ctl.Source, Title: ctl.Title, Severity: ctl.Severity, Account: c.u.AccountID,
		User: c.u.Name, KeyID: keyID, Evidence: evidence, Remedy: ctl.Remedy})
}

func (c *userCheck) days(t time.Time) int { return int(c.f.Now.Sub(t) / day) }

// credentials: the CIS controls on the user's console password and access keys.
func (c *userCheck) credentials() {
	u := c.u
	if u.Console && !u.MFA {
		c.add(ConsoleWithoutMFA, "", "console password enabled, no MFA device")
	}
	if u.Console {
		last, what := u.PasswordLastUsed, "password last used"
		if last.IsZero() {
			last, what = u.CreatedAt, "password never used; user created"
		}
		if !last.IsZero() && c.days(last) >= 45 {
			c.add(UnusedCredentials, "", fmt.Sprintf("%s %d days ago", what, c.days(last)))
		}
	}
	active := 0
	for _, k := range u.Keys {
		if k.Status != string(cloud.KeyActive) {
			continue
		}
		active++
		if c.days(k.CreatedAt) > 90 {
			c.add(NotRotated, k.AccessKeyID, fmt.Sprintf("created %d days ago (%s)", c.days(k.CreatedAt), k.CreatedAt.Format(time.DateOnly)))
		}
		last, what := k.LastUsed, "last used"
		if last.IsZero() {
			last, what = k.CreatedAt, "never used; created"
		}
		if c.days(last) >= 45 {
			c.add(UnusedCredentials, k.AccessKeyID, fmt.Sprintf("%s %d days ago", what, c.days(last)))
		}
		if k.LastUsed.IsZero() {
			c.add(NeverUsed, k.AccessKeyID, fmt.Sprintf("never used since it was created %d days ago", c.days(k.CreatedAt)))
		}
		if !k.Managed && len(u.Teams) == 0 && u.Owners == "" && u.ExemptBy == "" {
			c.add(Unowned, k.AccessKeyID, "Keyward does not hold it, and no team or keyward:owner tag names an owner")
		}
	}
	if active > 1 {
		c.add(TwoActiveKeys, "", fmt.Sprintf("%d active access keys", active))
	}
}

// policy: Keyward's own controls — exempt, failing, blocked, held, overdue.
func (c *userCheck) policy() {
	f, u := c.f, c.u
	id := "aws:" + u.AccountID + ":" + u.Name
	if u.ExemptBy != "" {
		c.add(Exempt, "", "exempted by "+u.ExemptBy)
		return
	}
	if ev, ok := f.Failing[id]; ok {
		c.add(Failing, "", ev)
	}
	if ev, ok := f.Blocked[id]; ok {
		c.add(Blocked, "", ev)
	}
	if ev, ok := f.Held[id]; ok {
		c.add(Held, "", ev)
	}
	pol, _, err := f.Policy.For(cloud.User{AccountID: u.AccountID, Name: u.Name, Path: u.Path, Tags: u.Tags}, nil)
	if err != nil {
		pol = f.Policy
	}
	for _, k := range u.Keys {
		if k.VaultState == "current" && f.Now.Sub(k.CreatedAt) > pol.RotateAfter && !f.Rotating[id] && f.Failing[id] == "" && f.Blocked[id] == "" {
			c.add(Overdue, k.AccessKeyID, fmt.Sprintf("current for %d days, rotate_after is %s", c.days(k.CreatedAt), pol.RotateAfter))
		}
	}
}
