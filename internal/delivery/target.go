package delivery

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/keyward/keyward/internal/vault"
)

// Match selects identities; every field set must match (team: the identity is that team's).
type Match struct {
	Team    string
	User    string // a glob on the IAM user name (path.Match)
	Account string
}

// IsZero reports whether the match sets nothing.
func (m Match) IsZero() bool { return m == Match{} }

// Target is a configured destination for the identities it matches; its Name is a template.
type Target struct {
	Match    Match
	Kind     Kind
	Name     string // template: {account}, {user}, {team} (when Match.Team is set)
	Format   Format
	KMSKeyID string
	Region   string
	Adopt    bool

	// The settings of the kinds that are not AWS's (one of them, by Kind).
	GitHub *GitHubTarget
	GitLab *GitLabTarget
	Kube   *KubeTarget
	File   *FileTarget
	Exec   *ExecTarget
}

// versioned says whether the kind keeps versions of a value (AWS's) and is named by Name.
func (k Kind) versioned() bool { return k == SecretsManager || k == SSMParameter }

// TagDeliverTo is the IAM user tag that adds targets to one identity: space-separated kind:name
// items, such as "secrets_manager:ci/payments ssm_parameter:/ci/payments" (format json, the default
// region).
const TagDeliverTo = "keyward:deliver-to"

var (
	templateVar = regexp.MustCompile(`\{[^{}]*\}`)
	// Secrets Manager names: letters, digits and /_+=.@- (up to 512); SSM parameter names: letters,
	// digits and _.-/ (a hierarchy starts with /), up to 1011 characters.
	secretName    = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)
	parameterName = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)
	kmsKey        = regexp.MustCompile(`^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)|alias/[A-Za-z0-9/_-]+|[A-Za-z0-9-]{1,256})$`)
	region        = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d$`)
)

// Check returns the target's problems, each with the field at fault ("match", "kind", "name",
// "format", "kms_key_id", "region") and a message naming the value.
func (t Target) Check() map[string]string {
	p := map[string]string{}
	if t.Match.IsZero() {
		p["match"] = "set at least one of team, user and account (user: \"*\" matches every user)"
	}
	if t.Match.User != "" {
		if _, err := path.Match(t.Match.User, ""); err != nil {
			p["match"] = fmt.Sprintf("user %q is not a valid glob", t.Match.User)
		}
	}
	if !slices.Contains(Kinds, t.Kind) {
		p["kind"] = fmt.Sprintf("unknown kind %q: want one of %s", t.Kind, kindList())
		return p
	}
	if t.Format != "" && !slices.Contains(Formats, t.Format) {
		p["format"] = fmt.Sprintf("unknown format %q: want json, env or ini", t.Format)
	}
	if !t.Kind.versioned() {
		t.checkKind(p)
		for field, v := range map[string]string{"format": string(t.Format), "kms_key_id": t.KMSKeyID, "region": t.Region} {
			if v != "" {
				p[field] = fmt.Sprintf("not a setting of %s targets", t.Kind)
			}
		}
		if t.Adopt && t.Kind != KubernetesSecret {
			p["adopt"] = fmt.Sprintf("not a setting of %s targets", t.Kind)
		}
		if t.Name != "" && t.Kind != Exec && t.Kind != KubernetesSecret {
			p["name"] = fmt.Sprintf("not a setting of %s targets (their own fields name them)", t.Kind)
		}
		if err := t.checkVariables(); err != nil {
			p["match"] = err.Error()
		}
		return p
	}
	if t.Name == "" {
		p["name"] = "must be set, such as keyward/{account}/{user}"
	} else if err := t.checkName(); err != nil {
		p["name"] = err.Error()
	}
	if t.KMSKeyID != "" && !kmsKey.MatchString(t.KMSKeyID) {
		p["kms_key_id"] = fmt.Sprintf("%q is not a KMS key id, alias or ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)", t.KMSKeyID)
	}
	if t.Region != "" && !region.MatchString(t.Region) {
		p["region"] = fmt.Sprintf("%q is not an AWS region, such as eu-west-1", t.Region)
	}
	return p
}

// Sample is the target's key with its variables left in place ({account}, {user}, {team}): two
// targets with the same sample write to the same place.
func (t Target) Sample() string {
	keep := strings.NewReplacer("{account}", "{account}", "{user}", "{user}", "{team}", "{team}")
	if t.Kind.versioned() {
		return (Spec{Kind: t.Kind, Region: t.Region, Name: t.Name}).Key()
	}
	return t.fill(keep).Key()
}

// OneIdentity says whether the target can only ever hold one identity's key: its place is named
// after the user ({user}), or it matches one team or one user by name.
func (t Target) OneIdentity() bool {
	return strings.Contains(t.Sample(), "{user}") || t.Match.Team != "" ||
		(t.Match.User != "" && !strings.ContainsAny(t.Match.User, `*?[\`))
}

// kindList names every kind, for messages.
func kindList() string {
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// checkVariables checks that a kind's settings use {team} only with match.team.
func (t Target) checkVariables() error {
	var fields []string
	switch {
	case t.GitHub != nil:
		fields = []string{t.GitHub.Repository, t.GitHub.Organization, t.GitHub.Environment}
	case t.File != nil:
		fields = []string{t.File.Path, t.File.Profile}
	}
	for _, f := range append(fields, t.Name) {
		if err := (Target{Match: t.Match, Name: f}).checkVariablesOf(); err != nil {
			return err
		}
	}
	return nil
}

// checkName checks the template's variables and, with sample values in place, its characters.
func (t Target) checkName() error {
	if err := t.checkVariablesOf(); err != nil {
		return err
	}
	_, err := t.render(vault.Identity{AccountID: "123456789012", UserName: "user"}, "team")
	return err
}

// checkVariablesOf checks the variables of t.Name.
func (t Target) checkVariablesOf() error {
	for _, v := range templateVar.FindAllString(t.Name, -1) {
		switch v {
		case "{account}", "{user}":
		case "{team}":
			if t.Match.Team == "" {
				return fmt.Errorf("%q uses {team}, which needs match.team", t.Name)
			}
		default:
			return fmt.Errorf("%q: unknown variable %s (want {account}, {user} or {team})", t.Name, v)
		}
	}
	return nil
}

// render fills the name in for one identity and checks it is a valid name of its kind.
func (t Target) render(id vault.Identity, team string) (string, error) {
	name := strings.NewReplacer("{account}", id.AccountID, "{user}", id.UserName, "{team}", team).Replace(t.Name)
	return name, checkName(t.Kind, name)
}

func checkName(k Kind, name string) error {
	switch k {
	case SSMParameter:
		if !parameterName.MatchString(name) || len(name) > 1011 || (strings.Contains(name, "/") && !strings.HasPrefix(name, "/")) {
			return fmt.Errorf("%q is not a valid parameter name: letters, digits and _.-/, a path starting with /", name)
		}
	default:
		if !secretName.MatchString(name) {
			return fmt.Errorf("%q is not a valid secret name: 1 to 512 of letters, digits and /_+=.@-", name)
		}
	}
	return nil
}

// Router says which targets an identity's key goes to.
type Router struct {
	Targets       []Target
	DefaultRegion string
	// TeamsOf names the teams an identity belongs to (needed only when a target matches a team).
	TeamsOf func(ctx context.Context, id vault.Identity) ([]string, error)
}

// For returns the targets of one identity: the configured ones it matches, in order, then those its
// tag adds; each target once.
func (r *Router) For(ctx context.Context, id vault.Identity, tags map[string]string) ([]Spec, error) {
	if r == nil {
		return nil, nil
	}
	var teams []string
	var specs []Spec
	seen := map[string]bool{}
	add := func(t Target, team string) error {
		var s Spec
		if t.Kind.versioned() {
			name, err := t.render(id, team)
			if err != nil {
				return fmt.Errorf("delivery target %s: %w", t.Name, err)
			}
			s = Spec{Kind: t.Kind, Name: name, Region: t.Region, Format: t.Format, KMSKeyID: t.KMSKeyID, Adopt: t.Adopt}
			if s.Region == "" {
				s.Region = r.DefaultRegion
			}
		} else {
			s = t.fill(strings.NewReplacer("{account}", id.AccountID, "{user}", id.UserName, "{team}", team))
		}
		if s.Format == "" {
			s.Format = JSON
		}
		if !seen[s.Key()] {
			seen[s.Key()] = true
			specs = append(specs, s)
		}
		return nil
	}
	for i, t := range r.Targets {
		if t.Match.Account != "" && t.Match.Account != id.AccountID {
			continue
		}
		if t.Match.User != "" {
			if ok, _ := path.Match(t.Match.User, id.UserName); !ok {
				continue
			}
		}
		if t.Match.Team != "" {
			if teams == nil && r.TeamsOf != nil {
				var err error
				if teams, err = r.TeamsOf(ctx, id); err != nil {
					return nil, fmt.Errorf("delivery target %d: teams of %s: %w", i+1, id, err)
				}
			}
			if !slices.Contains(teams, t.Match.Team) {
				continue
			}
		}
		if err := add(t, t.Match.Team); err != nil {
			return nil, err
		}
	}
	tagged, err := ParseDeliverTo(tags[TagDeliverTo])
	if err != nil {
		return nil, err
	}
	for _, t := range tagged {
		if err := add(t, ""); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// ParseDeliverTo reads the value of the keyward:deliver-to tag.
func ParseDeliverTo(tag string) ([]Target, error) {
	var out []Target
	for _, item := range strings.Fields(tag) {
		kind, name, ok := strings.Cut(item, ":")
		t := Target{Kind: Kind(kind), Name: name, Match: Match{User: "*"}}
		if !ok || !slices.Contains(Kinds, t.Kind) || !t.Kind.versioned() {
			return nil, fmt.Errorf("tag %s: %q: want kind:name with kind %s or %s", TagDeliverTo, item, SecretsManager, SSMParameter)
		}
		if strings.ContainsAny(name, "{}") {
			return nil, fmt.Errorf("tag %s: %q: a tag names one target, without variables", TagDeliverTo, item)
		}
		if err := checkName(t.Kind, name); err != nil {
			return nil, fmt.Errorf("tag %s: %w", TagDeliverTo, err)
		}
		out = append(out, t)
	}
	return out, nil
}
