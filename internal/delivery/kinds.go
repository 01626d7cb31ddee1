package delivery

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// The kinds that hold one value and no versions of it: a CI system's secrets, a file on a host, a
// command. Their Stage checks that the value can be written (access, permissions, the target's
// rules) without writing it; Publish writes it; Withdraw writes the old value back. Writing the same
// value twice is harmless, so a crash at any point resumes by running the move again.
const (
	// GitHubActions is a pair of GitHub Actions secrets (or one JSON secret) of a repository, an
	// environment or an organisation.
	GitHubActions Kind = "github_actions"
	// GitLabCI is a pair of GitLab CI/CD variables (or one JSON variable) of a project or a group.
	GitLabCI Kind = "gitlab_ci"
	// KubernetesSecret is a Kubernetes Secret, and the workloads to restart when it changes.
	KubernetesSecret Kind = "kubernetes_secret"
	// CredentialsFile is a profile of an AWS shared credentials file on the host Keyward runs on.
	CredentialsFile Kind = "credentials_file"
	// Exec is a command given the key as JSON on its standard input.
	Exec Kind = "exec"
)

// GitHubTarget says which GitHub Actions secrets hold the key, and how Keyward authenticates.
// Exactly one of Repository (owner/name, optionally with Environment) and Organization is set.
type GitHubTarget struct {
	Repository   string
	Environment  string
	Organization string
	// Visibility of organisation secrets: all, private or selected (SelectedRepositories, owner/name).
	Visibility           string
	SelectedRepositories []string
	Names                SecretNames
	// BaseURL is the REST API's root: https://api.github.com, or GitHub Enterprise Server's
	// https://HOST/api/v3.
	BaseURL string
	Auth    GitHubAuth
}

// GitHubAuth is a fine-grained (or classic) token from a file or the environment, or a GitHub App's
// installation. Secret material is never held here but the token read from the environment.
type GitHubAuth struct {
	TokenFile      string
	Token          secret.Value // from the environment variable the configuration names
	AppID          int64
	InstallationID int64
	PrivateKeyFile string
}

// GitLabTarget says which CI/CD variables hold the key. Exactly one of Project and Group (a path
// such as group/sub/project, or a numeric id) is set.
type GitLabTarget struct {
	Project          string
	Group            string
	Names            SecretNames
	Masked           bool // masked in job logs (Keyward's default: true)
	Protected        bool
	EnvironmentScope string // "*" for every environment
	BaseURL          string // https://gitlab.com, or a self-managed GitLab's root
	TokenFile        string
	Token            secret.Value // from the environment variable the configuration names
}

// KubeTarget is a Secret (its name is the target's Name), the keys of its data that hold the key,
// and the workloads to restart when they change (deployment/NAME, statefulset/NAME,
// daemonset/NAME, in the Secret's namespace).
type KubeTarget struct {
	Namespace  string
	Name       string
	Keys       SecretNames
	Kubeconfig string // "" for the in-cluster configuration
	Restart    []string
}

// SecretNames are the names the key is written under: two secrets (AccessKeyID and
// SecretAccessKey), or JSON alone ({"AccessKeyId", "SecretAccessKey"} in one secret).
type SecretNames struct {
	AccessKeyID     string
	SecretAccessKey string
	JSON            string
}

// WithDefaults fills in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY when no name is set.
func (n SecretNames) WithDefaults() SecretNames {
	if n == (SecretNames{}) {
		return SecretNames{AccessKeyID: "AWS_ACCESS_KEY_ID", SecretAccessKey: "AWS_SECRET_ACCESS_KEY"}
	}
	return n
}

// FileTarget is a profile in an AWS shared credentials file, and a command to run after it is
// written (argv, no shell).
type FileTarget struct {
	Path    string
	Profile string
	Run     []string
}

// ExecTarget is a command (argv, no shell) that takes the key as JSON on its standard input and
// says by its exit status whether it took it.
type ExecTarget struct {
	Command []string
	Timeout time.Duration
}

var (
	// GitHub: owner and repository names are letters, digits, '-', '_' and '.'; secret names are
	// letters, digits and '_', not starting with a digit or GITHUB_.
	ghOwnerRepo  = regexp.MustCompile(`^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$`)
	ghOrg        = regexp.MustCompile(`^[A-Za-z0-9-]{1,39}$`)
	ghSecretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,254}$`)
	ghEnvName    = regexp.MustCompile(`^[^/\\:;,'"<>|?*]{1,255}$`)
	// GitLab: a namespace path or a numeric id; variable keys are letters, digits and _ (255 at most).
	glPath = regexp.MustCompile(`^([0-9]+|[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*)$`)
	glKey  = regexp.MustCompile(`^[A-Za-z0-9_]{1,255}$`)
	// Kubernetes: DNS-1123 names (namespaces: labels), data keys of [-._a-zA-Z0-9].
	k8sName     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	k8sLabel    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	k8sDataKey  = regexp.MustCompile(`^[-._a-zA-Z0-9]{1,253}$`)
	k8sWorkload = regexp.MustCompile(`^(deployment|statefulset|daemonset)/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	iniProfile  = regexp.MustCompile(`^[A-Za-z0-9_.@+-]{1,64}$`)
)

// checkKind adds the problems of the kind's own settings, each under its field's name.
func (t Target) checkKind(p map[string]string) {
	switch t.Kind {
	case GitHubActions:
		t.checkGitHub(p)
	case GitLabCI:
		t.checkGitLab(p)
	case KubernetesSecret:
		t.checkKube(p)
	case CredentialsFile:
		f := t.File
		if f == nil || f.Path == "" {
			p["path"] = "must be set: the credentials file, such as /home/app/.aws/credentials"
		} else if !filepath.IsAbs(strings.NewReplacer("{account}", "a", "{user}", "u", "{team}", "t").Replace(f.Path)) && !strings.HasPrefix(f.Path, "~/") {
			p["path"] = fmt.Sprintf("%q: want an absolute path (or one under ~/)", f.Path)
		}
		if f != nil && f.Profile != "" && !templateOK(f.Profile, iniProfile) {
			p["profile"] = fmt.Sprintf("%q: want letters, digits and _.@+- (a profile's name)", f.Profile)
		}
		if f != nil && len(f.Run) > 0 && f.Run[0] == "" {
			p["run"] = "the command's first word is empty: want an argv such as [systemctl, reload, app]"
		}
	case Exec:
		e := t.Exec
		if e == nil || len(e.Command) == 0 || e.Command[0] == "" {
			p["command"] = "must be set: an argv such as [/usr/local/bin/push-key, --vendor, acme] (no shell)"
		}
		if e != nil && (e.Timeout < 0 || e.Timeout > 4*time.Minute) {
			p["timeout"] = fmt.Sprintf("want 1s to 4m (got %s)", e.Timeout)
		}
	}
}

func (t Target) checkGitHub(p map[string]string) {
	g := t.GitHub
	if g == nil {
		g = &GitHubTarget{}
	}
	switch {
	case g.Repository == "" && g.Organization == "":
		p["repository"] = "set repository (owner/name) or organization"
	case g.Repository != "" && g.Organization != "":
		p["organization"] = "set repository or organization, not both"
	case g.Repository != "" && !templateOK(g.Repository, ghOwnerRepo):
		p["repository"] = fmt.Sprintf("%q: want owner/name", g.Repository)
	case g.Organization != "" && !templateOK(g.Organization, ghOrg):
		p["organization"] = fmt.Sprintf("%q is not an organization's login", g.Organization)
	}
	if g.Environment != "" && (g.Organization != "" || !ghEnvName.MatchString(g.Environment)) {
		p["environment"] = fmt.Sprintf("%q: an environment of a repository (with repository, not organization), without /\\:;,'\"<>|?*", g.Environment)
	}
	switch g.Visibility {
	case "":
	case "all", "private", "selected":
		if g.Organization == "" {
			p["visibility"] = "only for organization secrets"
		}
	default:
		p["visibility"] = fmt.Sprintf("%q: want all, private or selected", g.Visibility)
	}
	if (g.Visibility == "selected") != (len(g.SelectedRepositories) > 0) {
		p["selected_repositories"] = "set with visibility: selected, and only then (owner/name each)"
	}
	for _, r := range g.SelectedRepositories {
		if !ghOwnerRepo.MatchString(r) {
			p["selected_repositories"] = fmt.Sprintf("%q: want owner/name", r)
		}
	}
	checkNames(p, g.Names, func(n string) bool {
		return ghSecretName.MatchString(n) && !strings.HasPrefix(strings.ToUpper(n), "GITHUB_")
	},
		"a GitHub secret name: letters, digits and _, not starting with a digit or GITHUB_")
	if g.BaseURL != "" && !okBaseURL(g.BaseURL) {
		p["base_url"] = fmt.Sprintf("%q: want https:// (http only on loopback)", g.BaseURL)
	}
	a := g.Auth
	app := a.AppID != 0 || a.InstallationID != 0 || a.PrivateKeyFile != ""
	token := a.TokenFile != "" || !a.Token.IsZero()
	switch {
	case app && token:
		p["token_file"] = "set a token or a GitHub App (app_id, installation_id, private_key_file), not both"
	case app && (a.AppID <= 0 || a.InstallationID <= 0 || a.PrivateKeyFile == ""):
		p["app_id"] = "a GitHub App needs app_id, installation_id and private_key_file"
	case !app && !token:
		p["token_file"] = "set token_file or token_env (a fine-grained token with Secrets: write), or a GitHub App"
	}
}

func (t Target) checkGitLab(p map[string]string) {
	g := t.GitLab
	if g == nil {
		g = &GitLabTarget{}
	}
	switch {
	case g.Project == "" && g.Group == "":
		p["project"] = "set project (a path such as acme/deploy, or its id) or group"
	case g.Project != "" && g.Group != "":
		p["group"] = "set project or group, not both"
	case g.Project != "" && !templateOK(g.Project, glPath):
		p["project"] = fmt.Sprintf("%q: want a project's path (group/name) or id", g.Project)
	case g.Group != "" && !templateOK(g.Group, glPath):
		p["group"] = fmt.Sprintf("%q: want a group's path or id", g.Group)
	}
	checkNames(p, g.Names, glKey.MatchString, "a GitLab variable key: letters, digits and _")
	if g.BaseURL != "" && !okBaseURL(g.BaseURL) {
		p["base_url"] = fmt.Sprintf("%q: want https:// (http only on loopback)", g.BaseURL)
	}
	if g.TokenFile == "" && g.Token.IsZero() {
		p["token_file"] = "set token_file or token_env (a token with the api scope, of a Maintainer)"
	}
}

func (t Target) checkKube(p map[string]string) {
	k := t.Kube
	if k == nil {
		k = &KubeTarget{}
	}
	if !templateOK(k.Namespace, k8sLabel) {
		p["namespace"] = fmt.Sprintf("%q: want a namespace (lower-case letters, digits and -)", k.Namespace)
	}
	if !templateOK(t.Name, k8sName) {
		p["name"] = fmt.Sprintf("%q: want the Secret's name (lower-case letters, digits, - and .)", t.Name)
	}
	checkNames(p, k.Keys, k8sDataKey.MatchString, "a Secret's data key: letters, digits, -, _ and .")
	for _, w := range k.Restart {
		if !k8sWorkload.MatchString(w) {
			p["restart"] = fmt.Sprintf("%q: want deployment/NAME, statefulset/NAME or daemonset/NAME", w)
		}
	}
}

// checkNames checks a pair of names, or a JSON name alone, against a kind's rule.
func checkNames(p map[string]string, n SecretNames, ok func(string) bool, rule string) {
	switch {
	case n.JSON != "" && (n.AccessKeyID != "" || n.SecretAccessKey != ""):
		p["names"] = "set json alone, or access_key_id and secret_access_key"
	case n.JSON == "" && (n.AccessKeyID == "") != (n.SecretAccessKey == ""):
		p["names"] = "set both access_key_id and secret_access_key (or json alone)"
	}
	for _, name := range []string{n.AccessKeyID, n.SecretAccessKey, n.JSON} {
		if name != "" && !ok(name) {
			p["names"] = fmt.Sprintf("%q is not %s", name, rule)
		}
	}
}

func okBaseURL(u string) bool {
	return strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://127.0.0.1") || strings.HasPrefix(u, "http://localhost") ||
		strings.HasPrefix(u, "http://[::1]")
}

// templateOK says whether s, its variables filled with sample values, matches re.
func templateOK(s string, re *regexp.Regexp) bool {
	return re.MatchString(strings.NewReplacer("{account}", "123456789012", "{user}", "user", "{team}", "team").Replace(s))
}

// fill replaces the identity's variables in the kind's settings: a copy of them for one identity.
func (t Target) fill(r *strings.Replacer) Spec {
	s := Spec{Kind: t.Kind}
	switch t.Kind {
	case GitHubActions:
		g := *t.GitHub
		g.Repository, g.Organization = r.Replace(g.Repository), r.Replace(g.Organization)
		g.Environment = r.Replace(g.Environment)
		g.Names = g.Names.WithDefaults()
		if g.BaseURL == "" {
			g.BaseURL = "https://api.github.com"
		}
		s.GitHub = &g
		switch {
		case g.Organization != "":
			s.Name = "orgs/" + g.Organization
		case g.Environment != "":
			s.Name = g.Repository + "/environments/" + g.Environment
		default:
			s.Name = g.Repository
		}
	case CredentialsFile:
		f := *t.File
		f.Path, f.Profile = r.Replace(f.Path), r.Replace(f.Profile)
		if f.Profile == "" {
			f.Profile = "default"
		}
		s.File = &f
		s.Name = f.Path + "[" + f.Profile + "]"
	case GitLabCI:
		g := *t.GitLab
		g.Project, g.Group = r.Replace(g.Project), r.Replace(g.Group)
		g.Names = g.Names.WithDefaults()
		if g.BaseURL == "" {
			g.BaseURL = "https://gitlab.com"
		}
		if g.EnvironmentScope == "" {
			g.EnvironmentScope = "*"
		}
		s.GitLab = &g
		s.Name = "projects/" + g.Project
		if g.Group != "" {
			s.Name = "groups/" + g.Group
		}
		if g.EnvironmentScope != "*" {
			s.Name += "@" + g.EnvironmentScope
		}
	case KubernetesSecret:
		k := *t.Kube
		k.Namespace, k.Name = r.Replace(k.Namespace), r.Replace(t.Name)
		k.Keys = k.Keys.WithDefaults()
		s.Kube, s.Adopt = &k, t.Adopt
		s.Name = k.Namespace + "/" + k.Name
	case Exec:
		e := *t.Exec
		if e.Timeout == 0 {
			e.Timeout = 30 * time.Second
		}
		s.Exec = &e
		s.Name = t.Name
		if s.Name == "" {
			s.Name = filepath.Base(e.Command[0])
		}
		s.Name = r.Replace(s.Name)
	}
	return s
}
