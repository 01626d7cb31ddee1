// Package config loads Keyward's configuration: one YAML file, each value overridable by a
// KEYWARD_<SECTION>_<KEY> environment variable, secrets also readable from files (*_file keys).
// Unknown keys and bad values are errors that name the key and, for the file, the line.
package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/secret"
)

// DefaultPath is the file read when no --config is given and it exists.
const DefaultPath = "keyward.yaml"

// DefaultMasterKeyEnv is the environment variable read for the key-encryption key with source env.
const DefaultMasterKeyEnv = "KEYWARD_MASTER_KEY"

// Config is the whole configuration, loaded once and passed explicitly.
type Config struct {
	// Cloud is the provider: aws, or sim (the simulated cloud of the demo and tests).
	Cloud    string   `yaml:"cloud"`
	Server   Server   `yaml:"server"`
	Log      Log      `yaml:"log"`
	Vault    Vault    `yaml:"vault"`
	AWS      AWS      `yaml:"aws"`
	Rotation Rotation `yaml:"rotation"`
	Audit    Audit    `yaml:"audit"`
	Notify   Notify   `yaml:"notify"`
	Auth     Auth     `yaml:"auth"`
	// Retention bounds what only grows (audit records are never purged by Keyward).
	Retention Retention `yaml:"retention"`
	// Delivery puts every rotated key where programs read it (Secrets Manager, Parameter Store).
	Delivery Delivery `yaml:"delivery"`
	// Reports configures the inventory's refresh and the compliance report's daily snapshot.
	Reports Reports `yaml:"reports"`
	// UI configures the web pages' sessions.
	UI UI `yaml:"ui"`
	// Metrics sends what each pass found to CloudWatch as well as to /metrics.
	Metrics Metrics `yaml:"metrics"`
	// Database bounds how long Keyward waits on PostgreSQL.
	Database Database `yaml:"database"`
}

func (m Metrics) validate(report func(key, format string, args ...any), cloud string) {
	ns := m.CloudWatch.Namespace
	switch {
	case ns == "":
	case cloud != "aws":
		report("metrics.cloudwatch.namespace", "CloudWatch needs cloud: aws (got cloud: %s)", cloud)
	case len(ns) > 255 || strings.HasPrefix(ns, "AWS/") || strings.Trim(ns, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/#:") != "":
		report("metrics.cloudwatch.namespace", "want up to 255 letters, digits and . - _ / # :, not starting with AWS/ (got %q)", ns)
	}
}

// Database: how long a statement may take on PostgreSQL before it is cut (0: no bound). A request
// that meets a database away or too slow is answered 503 instead of hanging.
type Database struct {
	StatementTimeout Duration `yaml:"statement_timeout"`
}

func (d Database) validate(report func(key, format string, args ...any)) {
	if st := d.StatementTimeout; st != 0 && (st < Duration(100*time.Millisecond) || st > Duration(10*time.Minute)) {
		report("database.statement_timeout", "want 0 (no bound) or 100ms to 10m (got %s)", st)
	}
}

// Metrics configures where metrics go besides /metrics.
type Metrics struct {
	CloudWatch CloudWatchMetrics `yaml:"cloudwatch"`
}

// CloudWatchMetrics: when Namespace is set, every pass puts its counts and each account's oldest key
// age into that CloudWatch namespace (cloud: aws only).
type CloudWatchMetrics struct {
	Namespace string `yaml:"namespace"`
}

// UI is the web interface's sessions.
type UI struct {
	// SessionTTL is a session's longest life; IdleTimeout ends it sooner without requests.
	SessionTTL  Duration `yaml:"session_ttl"`
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// Reports is how often serve reads the inventory again and stores the compliance summary.
type Reports struct {
	// Interval between reads (0 turns them off; keyward inventory --refresh reads on demand).
	Interval Duration `yaml:"interval"`
}

// Delivery configures the targets a new key is put into before it is promoted.
type Delivery struct {
	// Timeout is how long a rotation keeps trying a failing target before it is rolled back.
	Timeout Duration         `yaml:"timeout"`
	Targets []DeliveryTarget `yaml:"targets"`
}

// DeliveryTarget is a place the key of the identities it matches is put: a secret or parameter
// (secrets_manager, ssm_parameter), GitHub Actions secrets (github_actions), a profile of a
// credentials file (credentials_file), or a command (exec).
type DeliveryTarget struct {
	Match    DeliveryMatch `yaml:"match"`
	Kind     string        `yaml:"kind"`
	Name     string        `yaml:"name"`
	Format   string        `yaml:"format"`
	KMSKeyID string        `yaml:"kms_key_id"`
	Region   string        `yaml:"region"`
	Adopt    bool          `yaml:"adopt"`

	// github_actions
	Repository           string        `yaml:"repository"`
	Environment          string        `yaml:"environment"`
	Organization         string        `yaml:"organization"`
	Visibility           string        `yaml:"visibility"`
	SelectedRepositories []string      `yaml:"selected_repositories"`
	Names                DeliveryNames `yaml:"names"`
	BaseURL              string        `yaml:"base_url"`
	TokenFile            string        `yaml:"token_file"`
	TokenEnv             string        `yaml:"token_env"`
	TokenEnvValue        secret.Value  `yaml:"-"` // the variable TokenEnv names, read at load time
	AppID                int64         `yaml:"app_id"`
	InstallationID       int64         `yaml:"installation_id"`
	PrivateKeyFile       string        `yaml:"private_key_file"`

	// gitlab_ci (with names, base_url, token_file and token_env)
	Project          string `yaml:"project"`
	Group            string `yaml:"group"`
	Masked           *bool  `yaml:"masked"`
	Protected        bool   `yaml:"protected"`
	EnvironmentScope string `yaml:"environment_scope"`

	// kubernetes_secret (with name and adopt)
	Namespace  string        `yaml:"namespace"`
	Keys       DeliveryNames `yaml:"keys"`
	Kubeconfig string        `yaml:"kubeconfig"`
	Restart    []string      `yaml:"restart"`

	// credentials_file
	Path    string   `yaml:"path"`
	Profile string   `yaml:"profile"`
	Run     []string `yaml:"run"`

	// exec
	Command []string `yaml:"command"`
	Timeout Duration `yaml:"timeout"`
}

// DeliveryNames are the secret names of a CI system's target: two (access_key_id and
// secret_access_key, by default AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or json alone.
type DeliveryNames struct {
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key"`
	JSON            string `yaml:"json"`
}

// DeliveryMatch selects identities: every field set must match.
type DeliveryMatch struct {
	Team    string `yaml:"team"`
	User    string `yaml:"user"`
	Account string `yaml:"account"`
}

// Target is the delivery package's form of the target.
func (t DeliveryTarget) Target() delivery.Target {
	d := delivery.Target{Match: delivery.Match{Team: t.Match.Team, User: t.Match.User, Account: t.Match.Account},
		Kind: delivery.Kind(t.Kind), Name: t.Name, Format: delivery.Format(t.Format), KMSKeyID: t.KMSKeyID, Region: t.Region, Adopt: t.Adopt}
	switch d.Kind {
	case delivery.GitHubActions:
		d.GitHub = &delivery.GitHubTarget{Repository: t.Repository, Environment: t.Environment, Organization: t.Organization,
			Visibility: t.Visibility, SelectedRepositories: t.SelectedRepositories, BaseURL: t.BaseURL,
			Names: delivery.SecretNames{AccessKeyID: t.Names.AccessKeyID, SecretAccessKey: t.Names.SecretAccessKey, JSON: t.Names.JSON},
			Auth: delivery.GitHubAuth{TokenFile: t.TokenFile, Token: t.TokenEnvValue, AppID: t.AppID, InstallationID: t.InstallationID,
				PrivateKeyFile: t.PrivateKeyFile}}
	case delivery.GitLabCI:
		d.GitLab = &delivery.GitLabTarget{Project: t.Project, Group: t.Group, Masked: t.Masked == nil || *t.Masked, Protected: t.Protected,
			EnvironmentScope: t.EnvironmentScope, BaseURL: t.BaseURL, TokenFile: t.TokenFile, Token: t.TokenEnvValue,
			Names: delivery.SecretNames{AccessKeyID: t.Names.AccessKeyID, SecretAccessKey: t.Names.SecretAccessKey, JSON: t.Names.JSON}}
	case delivery.KubernetesSecret:
		d.Kube = &delivery.KubeTarget{Namespace: t.Namespace, Kubeconfig: t.Kubeconfig, Restart: t.Restart,
			Keys: delivery.SecretNames{AccessKeyID: t.Keys.AccessKeyID, SecretAccessKey: t.Keys.SecretAccessKey, JSON: t.Keys.JSON}}
	case delivery.CredentialsFile:
		d.File = &delivery.FileTarget{Path: t.Path, Profile: t.Profile, Run: t.Run}
	case delivery.Exec:
		d.Exec = &delivery.ExecTarget{Command: t.Command, Timeout: t.Timeout.Std()}
	}
	return d
}

// deliveryFields are the fields a target's problems are reported under, in order.
var deliveryFields = []string{"match", "kind", "name", "format", "kms_key_id", "region", "adopt", "repository", "environment",
	"organization", "visibility", "selected_repositories", "project", "group", "names", "base_url", "token_file", "app_id",
	"namespace", "keys", "kubeconfig", "restart", "path", "profile", "run", "command", "timeout"}

// kindsOfField are the kinds each kind-specific setting belongs to: set on a target of another
// kind, it is a mistake (say, path on a github_actions target).
var kindsOfField = map[string][]string{
	"repository": {"github_actions"}, "environment": {"github_actions"}, "organization": {"github_actions"},
	"visibility": {"github_actions"}, "selected_repositories": {"github_actions"}, "app_id": {"github_actions"},
	"installation_id": {"github_actions"}, "private_key_file": {"github_actions"},
	"names": {"github_actions", "gitlab_ci"}, "base_url": {"github_actions", "gitlab_ci"},
	"token_file": {"github_actions", "gitlab_ci"}, "token_env": {"github_actions", "gitlab_ci"},
	"project": {"gitlab_ci"}, "group": {"gitlab_ci"}, "masked": {"gitlab_ci"}, "protected": {"gitlab_ci"},
	"environment_scope": {"gitlab_ci"},
	"namespace":         {"kubernetes_secret"}, "keys": {"kubernetes_secret"}, "kubeconfig": {"kubernetes_secret"}, "restart": {"kubernetes_secret"},
	"path": {"credentials_file"}, "profile": {"credentials_file"}, "run": {"credentials_file"},
	"command": {"exec"}, "timeout": {"exec"},
}

// setFields names the kind-specific fields the target sets.
func (t DeliveryTarget) setFields() []string {
	var set []string
	for field, on := range map[string]bool{"repository": t.Repository != "", "environment": t.Environment != "",
		"organization": t.Organization != "", "visibility": t.Visibility != "", "selected_repositories": len(t.SelectedRepositories) > 0,
		"names": t.Names != DeliveryNames{}, "base_url": t.BaseURL != "", "token_file": t.TokenFile != "", "token_env": t.TokenEnv != "",
		"app_id": t.AppID != 0, "installation_id": t.InstallationID != 0, "private_key_file": t.PrivateKeyFile != "",
		"path": t.Path != "", "profile": t.Profile != "", "run": len(t.Run) > 0, "command": len(t.Command) > 0, "timeout": t.Timeout != 0,
		"project": t.Project != "", "group": t.Group != "", "masked": t.Masked != nil, "protected": t.Protected,
		"environment_scope": t.EnvironmentScope != "", "namespace": t.Namespace != "", "keys": t.Keys != DeliveryNames{},
		"kubeconfig": t.Kubeconfig != "", "restart": len(t.Restart) > 0} {
		if on {
			set = append(set, field)
		}
	}
	slices.Sort(set)
	return set
}

// validate checks the timeout and every target, naming the key at fault.
func (d Delivery) validate(report func(key, format string, args ...any)) {
	if d.Timeout < Duration(time.Second) || d.Timeout > Duration(4*time.Minute) {
		report("delivery.timeout", "want 1s to 4m, within the rotation lease of 5m (got %s)", d.Timeout)
	}
	names := map[string]int{}
	for i, t := range d.Targets {
		key := fmt.Sprintf("delivery.targets[%d]", i)
		problems := t.Target().Check()
		for _, field := range deliveryFields {
			if msg, ok := problems[field]; ok {
				report(key+"."+field, "%s", msg)
			}
		}
		for _, field := range t.setFields() {
			if kinds := kindsOfField[field]; !slices.Contains(kinds, t.Kind) {
				report(key+"."+field, "a setting of %s targets, not of %s", strings.Join(kinds, " and "), t.Kind)
			}
		}
		if t.TokenEnv != "" && t.TokenEnvValue.IsZero() {
			report(key+".token_env", "environment variable %s is not set", t.TokenEnv)
		}
		if t.Match.Account != "" && !accountRe.MatchString(t.Match.Account) {
			report(key+".match.account", "want 12 digits (got %q)", t.Match.Account)
		}
		// Two identities may not share one secret: the second's rotation would overwrite the first's
		// key. A target names one identity's secret when its name has {user} or {account}{user}, or
		// its match selects one user or one team.
		if len(problems) == 0 {
			spec := t.Target().Sample()
			if j, dup := names[spec]; dup {
				report(key, "names the same place as delivery.targets[%d] (%s): two identities' keys would overwrite each other", j, spec)
			}
			names[spec] = i
			if !t.Target().OneIdentity() {
				report(key+".match", "matches several users but names one place (%s): use {user} in its name, or match one user or team", spec)
			}
		}
	}
}

// Retention is how long serve keeps what is no longer needed: delivered notifications, spent
// login-failure counts, and finished rotation records (each identity's last one always stays).
type Retention struct {
	// Horizon is the age past which they are purged.
	Horizon Duration `yaml:"horizon"`
	// Interval is how often serve purges them (and refreshes the query planner's statistics).
	Interval Duration `yaml:"interval"`
}

// Auth configures who may call the API and how they prove it.
type Auth struct {
	// Issuer and Audience are the iss and aud of Keyward's tokens (set Issuer to the service's URL).
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	// TokenTTL is a token's lifetime.
	TokenTTL Duration `yaml:"token_ttl"`
	// SigningKeyRotation is how long a token signing key signs before a new one takes over.
	SigningKeyRotation Duration `yaml:"signing_key_rotation"`
	// RequireMFA lists the roles that must give a second factor before reading a secret.
	RequireMFA []string `yaml:"require_mfa"`
	// AllowedCIDRs, when set, are the only source networks any request is served from.
	AllowedCIDRs []string    `yaml:"allowed_cidrs"`
	Argon2       AuthArgon2  `yaml:"argon2"`
	Lockout      AuthLockout `yaml:"lockout"`
	OIDC         AuthOIDC    `yaml:"oidc"`
	// MaxConcurrentHashes bounds the password hashes computed at once (0: as many as fit in
	// 256 MiB at argon2.memory_kib each); logins beyond it wait half a second, then get 429.
	MaxConcurrentHashes int `yaml:"max_concurrent_hashes"`
}

// AuthArgon2 are the password hash's cost parameters.
type AuthArgon2 struct {
	MemoryKiB   int `yaml:"memory_kib"`
	Iterations  int `yaml:"iterations"`
	Parallelism int `yaml:"parallelism"`
}

// AuthLockout slows down and stops password guessing.
type AuthLockout struct {
	MaxFailures   int      `yaml:"max_failures"`
	IPMaxFailures int      `yaml:"ip_max_failures"`
	Duration      Duration `yaml:"duration"`
	Delay         Duration `yaml:"delay"`
	MaxDelay      Duration `yaml:"max_delay"`
}

// AuthOIDC is single sign-on through an OpenID Connect provider (enabled when Issuer is set).
type AuthOIDC struct {
	Issuer           string       `yaml:"issuer"`
	ClientID         string       `yaml:"client_id"`
	ClientSecret     secret.Value `yaml:"client_secret"`
	ClientSecretFile string       `yaml:"client_secret_file"`
	RedirectURL      string       `yaml:"redirect_url"`
	GroupsClaim      string       `yaml:"groups_claim"`
	// Rules map the provider's groups to a role and teams; a user gets the most powerful role and
	// every team of the rules its groups match, and is refused when none match.
	Rules []OIDCRule `yaml:"rules"`
}

// OIDCRule maps one IdP group to a role and teams.
type OIDCRule struct {
	Group string   `yaml:"group"`
	Role  string   `yaml:"role"`
	Teams []string `yaml:"teams"`
}

// Notify configures notifications: who is told of what, and through which channels.
type Notify struct {
	// Interval is how often the outbox is looked at for deliveries that are due.
	Interval Duration `yaml:"interval"`
	// LeadTime is how long before an old key is deactivated its owners are told.
	LeadTime Duration `yaml:"deactivation_lead_time"`
	// StuckAfter: readiness fails while a notification has waited longer than this.
	StuckAfter Duration `yaml:"stuck_after"`
	// TemplatesDir may hold subject.tmpl, text.tmpl and html.tmpl in place of the built-in ones.
	TemplatesDir string `yaml:"templates_dir"`
	// Admin is the global channel: these addresses are told of the events listed.
	Admin NotifyRecipients `yaml:"admin"`
	// Security is told of every key reported exposed (key.leaked), at once.
	Security NotifySecurity `yaml:"security"`
	// Owners give the owners of matching users their address (besides the keyward:owner tag).
	Owners []NotifyOwner `yaml:"owners"`
	// Teams give Keyward teams (keyward team add) addresses for the events of the IAM user they own.
	Teams []NotifyTeam `yaml:"teams"`
	// OwnerEvents are the events owners named by a user's keyward:owner tag are told of.
	OwnerEvents []string        `yaml:"owner_events"`
	Email       NotifyEmail     `yaml:"email"`
	SMTP        NotifySMTP      `yaml:"smtp"`
	SNS         []NotifySNS     `yaml:"sns"`
	Webhooks    []NotifyWebhook `yaml:"webhooks"`
	Slack       []NotifySlack   `yaml:"slack"`
}

// NotifySecurity is the security team's channel: the addresses told of leaks.
type NotifySecurity struct {
	Emails []string `yaml:"emails"`
}

// NotifyRecipients are e-mail addresses and the events they want (globs; none: all).
type NotifyRecipients struct {
	Emails []string `yaml:"emails"`
	Events []string `yaml:"events"`
}

// NotifyOwner names the owners of the users matching UserGlob (in Account, or any).
type NotifyOwner struct {
	Account  string   `yaml:"account"`
	UserGlob string   `yaml:"user_glob"`
	Emails   []string `yaml:"emails"`
	Events   []string `yaml:"events"`
}

// NotifyTeam gives a team's addresses and the events they want.
type NotifyTeam struct {
	Team   string   `yaml:"team"`
	Emails []string `yaml:"emails"`
	Events []string `yaml:"events"`
}

// NotifyEmail says how e-mail leaves: through an SMTP relay or AWS SES, from which address.
type NotifyEmail struct {
	Via  string `yaml:"via"`
	From string `yaml:"from"`
}

// NotifySMTP is the SMTP relay.
type NotifySMTP struct {
	Host         string       `yaml:"host"`
	Port         int          `yaml:"port"`
	Username     string       `yaml:"username"`
	Password     secret.Value `yaml:"password"`
	PasswordFile string       `yaml:"password_file"`
	StartTLS     bool         `yaml:"starttls"`
}

// NotifySNS is an SNS topic and the events published to it.
type NotifySNS struct {
	TopicARN string   `yaml:"topic_arn"`
	Events   []string `yaml:"events"`
}

// NotifyWebhook is a URL that notices are POSTed to as JSON, signed with Secret. The URL may carry
// a token, so it is treated as a secret: logs, errors and the outbox name the webhook by Name.
type NotifyWebhook struct {
	Name       string       `yaml:"name"` // default: the URL's host
	URL        secret.Value `yaml:"url"`
	Secret     secret.Value `yaml:"secret"`
	SecretFile string       `yaml:"secret_file"`
	Events     []string     `yaml:"events"`
}

// DestinationName is the webhook's name in routes, the outbox and logs: Name, or the URL's host.
func (h NotifyWebhook) DestinationName() string {
	if h.Name != "" {
		return h.Name
	}
	if u, err := url.Parse(h.URL.Reveal()); err == nil {
		return u.Host
	}
	return ""
}

// NotifySlack is a Slack-compatible incoming webhook: its URL is the secret, Name stands for it.
type NotifySlack struct {
	Name    string       `yaml:"name"`
	URL     secret.Value `yaml:"url"`
	URLFile string       `yaml:"url_file"`
	Events  []string     `yaml:"events"`
}

// Audit configures the audit trail and the sinks it is shipped to besides the database.
type Audit struct {
	// CheckpointInterval is how often serve signs a checkpoint of the trail's end (when it grew).
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// ShipInterval is how often serve sends the sinks what they have not had yet.
	ShipInterval Duration `yaml:"ship_interval"`
	// File is a JSON-lines file the trail is appended to ("-": standard output; "": none).
	File       string          `yaml:"file"`
	CloudWatch AuditCloudWatch `yaml:"cloudwatch"`
}

// AuditCloudWatch sends the trail to CloudWatch Logs (in aws.region) when LogGroup is set.
type AuditCloudWatch struct {
	LogGroup  string `yaml:"log_group"`
	LogStream string `yaml:"log_stream"`
}

var (
	logGroupRe  = regexp.MustCompile(`^[.\-_/#A-Za-z0-9]{1,512}$`)
	logStreamRe = regexp.MustCompile(`^[^:*]{1,512}$`)
)

// Server configures the HTTP listener.
type Server struct {
	Listen          string   `yaml:"listen"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// TLSCertFile and TLSKeyFile, both set, make the listener HTTPS.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// TrustedProxies are the addresses (CIDRs) whose X-Forwarded-For is believed.
	TrustedProxies []string  `yaml:"trusted_proxies"`
	RateLimit      RateLimit `yaml:"rate_limit"`
	// MetricsListen, when set, is where /metrics is served instead of on Listen.
	MetricsListen string `yaml:"metrics_listen"`
	// MetricsToken, when set (or read from MetricsTokenFile), is the bearer token /metrics needs.
	MetricsToken     secret.Value `yaml:"metrics_token"`
	MetricsTokenFile string       `yaml:"metrics_token_file"`
	// ReadTimeout bounds reading a whole request, body included; WriteTimeout writing the answer;
	// IdleTimeout how long a kept-alive connection waits for its next request.
	ReadTimeout  Duration `yaml:"read_timeout"`
	WriteTimeout Duration `yaml:"write_timeout"`
	IdleTimeout  Duration `yaml:"idle_timeout"`
}

// RateLimit is in requests per second (bursts of twice that); 0 turns a limit off.
type RateLimit struct {
	PerPrincipal float64 `yaml:"per_principal"`
	PerIP        float64 `yaml:"per_ip"`
}

// Log configures structured logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Vault configures the credential vault: its database and its key-encryption key.
type Vault struct {
	Driver  string       `yaml:"driver"`
	DSN     secret.Value `yaml:"dsn"`
	DSNFile string       `yaml:"dsn_file"`
	// DSNSecretARN, when set, names a Secrets Manager secret whose string is the DSN, read when the
	// database is opened (a Lambda function, a container without a file for it).
	DSNSecretARN string    `yaml:"dsn_secret_arn"`
	MasterKey    MasterKey `yaml:"master_key"`
}

// Key sources for the vault's key-encryption key.
const (
	KeySourceFile   = "file"
	KeySourceEnv    = "env"
	KeySourceAWSKMS = "aws-kms"
)

// MasterKey configures where the key-encryption key (KEK) that wraps every data key comes from.
type MasterKey struct {
	Source   string `yaml:"source"`
	File     string `yaml:"file"`
	Env      string `yaml:"env"`
	KMSKeyID string `yaml:"kms_key_id"`

	// EnvValue is the content of the variable named by Env, read at load time for source env.
	EnvValue secret.Value `yaml:"-"`
}

// AWS configures the AWS SDK: KMS for the vault, IAM and STS for rotation.
type AWS struct {
	Region       string       `yaml:"region"`
	EndpointURL  string       `yaml:"endpoint_url"`
	Accounts     []AWSAccount `yaml:"accounts"`
	Organization Organization `yaml:"organization"`
	// UserPath, when set, manages only the users under this IAM path (ListUsers' PathPrefix): set
	// it to the path Keyward's IAM policy is scoped to (deploy/iam's UserPath, Terraform's user_path).
	UserPath string  `yaml:"user_path"`
	MaxRPS   float64 `yaml:"max_rps"`
}

// AWSAccount is a member account and the role Keyward assumes in it.
type AWSAccount struct {
	ID         string `yaml:"id"`
	RoleARN    string `yaml:"role_arn"`
	ExternalID string `yaml:"external_id"`
	// UserPath overrides aws.user_path for this account.
	UserPath string `yaml:"user_path"`
}

// Organization configures account discovery through AWS Organizations.
type Organization struct {
	RoleName   string `yaml:"role_name"`
	ExternalID string `yaml:"external_id"`
}

// Rotation is the rotation policy and the scheduler's settings.
type Rotation struct {
	RotateAfter                Duration `yaml:"rotate_after"`
	DeactivateAfter            Duration `yaml:"deactivate_after"`
	DeleteAfter                Duration `yaml:"delete_after"`
	Interval                   Duration `yaml:"interval"`
	VerifyTimeout              Duration `yaml:"verify_timeout"`
	VerifyInterval             Duration `yaml:"verify_interval"`
	QuietPeriod                Duration `yaml:"quiet_period"`
	ForceDeactivate            bool     `yaml:"force_deactivate"`
	ExemptGroup                string   `yaml:"exempt_group"`
	DeleteForeignInactiveAfter Duration `yaml:"delete_foreign_inactive_after"`
	LeakDeleteAfter            Duration `yaml:"leak_delete_after"`
	Concurrency                int      `yaml:"concurrency"`
	Lease                      Duration `yaml:"lease"`
	// StallAfter is how long the scheduler may go without progress (a pass started, a user
	// visited, a pass finished) before /healthz/rotation, status and the metrics call it stalled.
	// 0: three intervals, at least a minute.
	StallAfter Duration `yaml:"stall_after"`
	Rules      []Rule   `yaml:"rules"`
}

// Rule overrides the policy for the users it matches (first matching rule wins; IAM tags win over
// rules). Zero durations keep the policy's.
type Rule struct {
	PathPrefix      string   `yaml:"path_prefix"`
	NameGlob        string   `yaml:"name_glob"`
	RotateAfter     Duration `yaml:"rotate_after"`
	DeactivateAfter Duration `yaml:"deactivate_after"`
	DeleteAfter     Duration `yaml:"delete_after"`
	Exempt          bool     `yaml:"exempt"`
}

// Default returns the configuration used where neither the file nor the environment says otherwise.
func Default() Config {
	const day = 24 * time.Hour
	return Config{
		Cloud: "aws",
		Server: Server{Listen: "127.0.0.1:8080", ShutdownTimeout: Duration(30 * time.Second),
			ReadTimeout: Duration(30 * time.Second), WriteTimeout: Duration(60 * time.Second), IdleTimeout: Duration(2 * time.Minute),
			RateLimit: RateLimit{PerPrincipal: 50, PerIP: 100}},
		Log: Log{Level: "info", Format: "json"},
		Vault: Vault{
			Driver:    "sqlite",
			DSN:       secret.New("./keyward.db"),
			MasterKey: MasterKey{Source: KeySourceFile, File: "./keyward.key", Env: DefaultMasterKeyEnv},
		},
		AWS: AWS{MaxRPS: 5},
		Rotation: Rotation{
			RotateAfter: Duration(90 * day), DeactivateAfter: Duration(10 * day), DeleteAfter: Duration(10 * day),
			Interval: Duration(10 * time.Minute), VerifyTimeout: Duration(60 * time.Second), VerifyInterval: Duration(time.Second),
			Lease:       Duration(30 * time.Second),
			QuietPeriod: Duration(day), LeakDeleteAfter: Duration(time.Hour),
			Concurrency: 32,
		},
		Audit: Audit{CheckpointInterval: Duration(time.Minute), ShipInterval: Duration(5 * time.Second),
			CloudWatch: AuditCloudWatch{LogStream: "keyward"}},
		Notify: Notify{Interval: Duration(5 * time.Second), LeadTime: Duration(2 * day), StuckAfter: Duration(time.Hour),
			Email: NotifyEmail{Via: "smtp"}, SMTP: NotifySMTP{Port: 587, StartTLS: true}},
		Auth: Auth{Issuer: "keyward", Audience: "keyward", TokenTTL: Duration(2 * time.Minute),
			SigningKeyRotation: Duration(30 * day), RequireMFA: []string{"admin", "member"},
			Argon2:  AuthArgon2{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1},
			Lockout: AuthLockout{MaxFailures: 10, IPMaxFailures: 50, Duration: Duration(15 * time.Minute), Delay: Duration(250 * time.Millisecond), MaxDelay: Duration(4 * time.Second)},
			OIDC:    AuthOIDC{GroupsClaim: "groups"}},
		Retention: Retention{Horizon: Duration(90 * day), Interval: Duration(day)},
		Delivery:  Delivery{Timeout: Duration(2 * time.Minute)},
		Reports:   Reports{Interval: Duration(day)},
		Database:  Database{StatementTimeout: Duration(30 * time.Second)},
		UI:        UI{SessionTTL: Duration(8 * time.Hour), IdleTimeout: Duration(time.Hour)},
	}
}

// listenAddr checks an address to listen on: host:port, the port a number from 0 to 65535.
func listenAddr(report func(key, format string, args ...any), key, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		if n, err = strconv.ParseUint(port, 10, 16); err == nil && n > 65535 {
			err = strconv.ErrRange
		}
	}
	if err != nil {
		report(key, "want host:port with a port from 0 to 65535, such as 127.0.0.1:8080 (got %q)", addr)
	}
}

// validate checks values and their combinations; it reports every problem it finds.
func (c *Config) validate(report func(key, format string, args ...any)) {
	listenAddr(report, "server.listen", c.Server.Listen)
	if c.Server.MetricsListen != "" {
		listenAddr(report, "server.metrics_listen", c.Server.MetricsListen)
	}
	for key, d := range map[string]Duration{"server.read_timeout": c.Server.ReadTimeout, "server.write_timeout": c.Server.WriteTimeout,
		"server.idle_timeout": c.Server.IdleTimeout} {
		if d < Duration(time.Second) {
			report(key, "want at least 1s (got %s)", d)
		}
	}
	if c.Server.ShutdownTimeout <= 0 {
		report("server.shutdown_timeout", "must be positive")
	}
	if c.Audit.CheckpointInterval < Duration(time.Second) {
		report("audit.checkpoint_interval", "want at least 1s (got %s)", c.Audit.CheckpointInterval)
	}
	if c.Audit.ShipInterval < Duration(100*time.Millisecond) {
		report("audit.ship_interval", "want at least 100ms (got %s)", c.Audit.ShipInterval)
	}
	if g := c.Audit.CloudWatch.LogGroup; g != "" && !logGroupRe.MatchString(g) {
		report("audit.cloudwatch.log_group", "%q: want 1 to 512 of letters, digits and ._-/#", g)
	}
	if st := c.Audit.CloudWatch.LogStream; !logStreamRe.MatchString(st) {
		report("audit.cloudwatch.log_stream", "%q: want 1 to 512 characters, none of them ':' or '*'", st)
	}
	c.Notify.validate(report)
	c.Auth.validate(report)
	c.Retention.validate(report)
	c.Delivery.validate(report)
	if c.UI.SessionTTL < Duration(time.Minute) || c.UI.SessionTTL > Duration(7*24*time.Hour) {
		report("ui.session_ttl", "want 1m to 7d (got %s)", c.UI.SessionTTL)
	}
	if c.UI.IdleTimeout < Duration(time.Minute) || c.UI.IdleTimeout > c.UI.SessionTTL {
		report("ui.idle_timeout", "want at least 1m and at most ui.session_ttl (got %s)", c.UI.IdleTimeout)
	}
	c.Database.validate(report)
	c.Metrics.validate(report, c.Cloud)
	if i := c.Reports.Interval; i != 0 && i < Duration(time.Minute) {
		report("reports.interval", "want 0 (off) or at least 1m (got %s)", i)
	}
	if (c.Server.TLSCertFile == "") != (c.Server.TLSKeyFile == "") {
		report("server.tls_cert_file", "set both server.tls_cert_file and server.tls_key_file, or neither")
	}
	cidrs(report, "server.trusted_proxies", c.Server.TrustedProxies)
	if c.Server.RateLimit.PerPrincipal < 0 {
		report("server.rate_limit.per_principal", "must not be negative (0 turns it off)")
	}
	if c.Server.RateLimit.PerIP < 0 {
		report("server.rate_limit.per_ip", "must not be negative (0 turns it off)")
	}
	oneOf(report, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(report, "log.format", c.Log.Format, "json", "text")

	c.Vault.validate(report, c.AWS.Region)

	oneOf(report, "cloud", c.Cloud, "aws", "sim")
	c.AWS.validate(report)
	c.Rotation.validate(report)

	if c.AWS.EndpointURL != "" {
		if u, err := url.Parse(c.AWS.EndpointURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			report("aws.endpoint_url", "want an http:// or https:// URL (got %q)", c.AWS.EndpointURL)
		}
	}
}

// validate checks the retention settings.
func (r Retention) validate(report func(key, format string, args ...any)) {
	if r.Horizon < Duration(24*time.Hour) {
		report("retention.horizon", "want at least 1d (got %s)", r.Horizon)
	}
	if r.Interval < Duration(time.Minute) {
		report("retention.interval", "want at least 1m (got %s)", r.Interval)
	}
}

// validate checks the vault's database and key-encryption key; an AWS KMS key needs awsRegion.
func (v Vault) validate(report func(key, format string, args ...any), awsRegion string) {
	if oneOf(report, "vault.driver", v.Driver, "sqlite", "postgres") {
		switch {
		case v.DSNSecretARN != "":
			if !strings.HasPrefix(v.DSNSecretARN, "arn:aws") || !strings.Contains(v.DSNSecretARN, ":secretsmanager:") {
				report("vault.dsn_secret_arn", "want a Secrets Manager secret ARN (arn:aws:secretsmanager:…), got %q", v.DSNSecretARN)
			}
		case v.DSN.IsZero():
			report("vault.dsn", "must not be empty")
		case v.Driver == "postgres":
			if _, err := pgconn.ParseConfig(v.DSN.Reveal()); err != nil {
				// pgconn's parse errors redact the password of the string they quote.
				report("vault.dsn", "not a valid PostgreSQL connection string: %v", err)
			}
		}
	}

	mk := v.MasterKey
	if oneOf(report, "vault.master_key.source", mk.Source, KeySourceFile, KeySourceEnv, KeySourceAWSKMS) {
		switch mk.Source {
		case KeySourceFile:
			if mk.File == "" {
				report("vault.master_key.file", "must be set when vault.master_key.source is file")
			}
		case KeySourceEnv:
			if mk.Env == "" {
				report("vault.master_key.env", "must name an environment variable when vault.master_key.source is env")
			} else if err := checkKeyMaterial(mk.EnvValue); err != nil {
				report("vault.master_key.env", "environment variable %s: %v", mk.Env, err)
			}
		case KeySourceAWSKMS:
			if mk.KMSKeyID == "" {
				report("vault.master_key.kms_key_id", "must be set when vault.master_key.source is aws-kms")
			}
			if awsRegion == "" {
				report("aws.region", "must be set when vault.master_key.source is aws-kms")
			}
		}
	}
}

// validate checks the AWS settings: the rate limit, the accounts or the organization.
func (a AWS) validate(report func(key, format string, args ...any)) {
	if a.MaxRPS <= 0 {
		report("aws.max_rps", "must be positive")
	}
	for i, a := range a.Accounts {
		key := fmt.Sprintf("aws.accounts[%d]", i)
		if !accountRe.MatchString(a.ID) {
			report(key+".id", "want a 12-digit account id (got %q)", a.ID)
		}
		if a.RoleARN != "" && !strings.HasPrefix(a.RoleARN, "arn:aws") {
			report(key+".role_arn", "want a role ARN such as arn:aws:iam::%s:role/keyward (got %q)", a.ID, a.RoleARN)
		}
		if !validIAMPath(a.UserPath) {
			report(key+".user_path", "want an IAM path that starts and ends with / such as /ci/ (got %q)", a.UserPath)
		}
	}
	if !validIAMPath(a.UserPath) {
		report("aws.user_path", "want an IAM path that starts and ends with / such as /ci/ (got %q)", a.UserPath)
	}
	if len(a.Accounts) > 0 && a.Organization.RoleName != "" {
		report("aws.organization.role_name", "set aws.accounts or aws.organization.role_name, not both")
	}
	if a.Organization.ExternalID != "" && a.Organization.RoleName == "" {
		report("aws.organization.external_id", "needs aws.organization.role_name")
	}
}

// Warnings are settings that are valid but likely to hurt: config check prints them, serve logs them.
func (c Config) Warnings() []string {
	var w []string
	// Consumers that cache the key (AWS's aws-secretsmanager-caching refreshes every hour by default)
	// keep reading the old key until they refresh: it must still be active by then.
	if floor := time.Hour + c.Rotation.Interval.Std(); c.Rotation.DeactivateAfter.Std() < floor {
		w = append(w, fmt.Sprintf("rotation.deactivate_after (%s) is shorter than an hour plus rotation.interval (%s): a consumer that caches "+
			"the key for an hour (aws-secretsmanager-caching's default) will read a deactivated key; its refresh interval must be shorter "+
			"than deactivate_after minus one interval, and it must refresh on an authentication error (docs/DEPLOY.md, \"Consumers\")",
			c.Rotation.DeactivateAfter, Duration(floor)))
	}
	return w
}

// iamPathRe is IAM's path syntax: "/", or /-delimited segments of printable ASCII (IAM's docs:
// "IAM identifiers", paths up to 512 characters).
var iamPathRe = regexp.MustCompile(`^/([\x21-\x2E\x30-\x7E]+/)*$`)

// validIAMPath says whether p is empty (no path) or an IAM path.
func validIAMPath(p string) bool { return p == "" || (len(p) <= 512 && iamPathRe.MatchString(p)) }

// validate checks the rotation policy's durations, concurrency and rules.
func (r Rotation) validate(report func(key, format string, args ...any)) {
	for key, d := range map[string]Duration{"rotation.rotate_after": r.RotateAfter, "rotation.interval": r.Interval,
		"rotation.verify_timeout": r.VerifyTimeout, "rotation.verify_interval": r.VerifyInterval, "rotation.leak_delete_after": r.LeakDeleteAfter} {
		if d <= 0 {
			report(key, "must be positive")
		}
	}
	if r.Concurrency < 1 || r.Concurrency > 64 {
		report("rotation.concurrency", "want 1 to 64 (got %d)", r.Concurrency)
	}
	if r.Lease.Std() < time.Second || r.Lease.Std() > 5*time.Minute {
		report("rotation.lease", "want 1s to 5m (got %s)", r.Lease)
	}
	for i, rule := range r.Rules {
		key := fmt.Sprintf("rotation.rules[%d]", i)
		if rule.PathPrefix == "" && rule.NameGlob == "" {
			report(key, "needs path_prefix or name_glob")
		}
		if _, err := path.Match(rule.NameGlob, ""); err != nil {
			report(key+".name_glob", "not a valid glob: %q", rule.NameGlob)
		}
	}
}

var (
	accountRe  = regexp.MustCompile(`^[0-9]{12}$`)
	teamNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// checkKeyMaterial checks that v is the base64 of 32 bytes, without saying anything about its content.
func checkKeyMaterial(v secret.Value) error {
	if v.IsZero() {
		return fmt.Errorf("is not set or empty")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v.Reveal()))
	if err != nil {
		return fmt.Errorf("is not valid base64")
	}
	if len(raw) != 32 {
		return fmt.Errorf("must hold 32 bytes (base64 of 32 random bytes), holds %d", len(raw))
	}
	return nil
}

func oneOf(report func(key, format string, args ...any), key, got string, allowed ...string) bool {
	if slices.Contains(allowed, got) {
		return true
	}
	report(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), got)
	return false
}

var (
	emailRe    = regexp.MustCompile(`^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$`)
	topicARNRe = regexp.MustCompile(`^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$`)
)

func (n *Notify) validate(report func(key, format string, args ...any)) {
	if n.Interval < Duration(100*time.Millisecond) {
		report("notify.interval", "want at least 100ms (got %s)", n.Interval)
	}
	if n.StuckAfter <= 0 {
		report("notify.stuck_after", "must be positive")
	}
	if n.LeadTime < 0 {
		report("notify.deactivation_lead_time", "must not be negative")
	}
	emails := func(key string, list []string) bool {
		for i, e := range list {
			if !emailRe.MatchString(e) {
				report(fmt.Sprintf("%s[%d]", key, i), "%q is not an e-mail address", e)
			}
		}
		return len(list) > 0
	}
	events := func(key string, globs []string) { eventGlobs(report, key, globs) }
	wantsEmail := emails("notify.admin.emails", n.Admin.Emails)
	wantsEmail = emails("notify.security.emails", n.Security.Emails) || wantsEmail
	events("notify.admin.events", n.Admin.Events)
	events("notify.owner_events", n.OwnerEvents)
	for i, o := range n.Owners {
		key := fmt.Sprintf("notify.owners[%d]", i)
		if _, err := path.Match(o.UserGlob, ""); err != nil || o.UserGlob == "" {
			report(key+".user_glob", "want a glob such as deploy-* (got %q)", o.UserGlob)
		}
		if o.Account != "" && !accountRe.MatchString(o.Account) {
			report(key+".account", "want 12 digits (got %q)", o.Account)
		}
		if !emails(key+".emails", o.Emails) {
			report(key+".emails", "list at least one address")
		}
		events(key+".events", o.Events)
		wantsEmail = true
	}
	for i, t := range n.Teams {
		key := fmt.Sprintf("notify.teams[%d]", i)
		if !teamNameRe.MatchString(t.Team) {
			report(key+".team", "want a team's name, as keyward team add made it (got %q)", t.Team)
		}
		if !emails(key+".emails", t.Emails) {
			report(key+".emails", "list at least one address")
		}
		events(key+".events", t.Events)
		wantsEmail = true
	}
	// Owners named by tag may appear at any time: e-mail must be set up to reach them.
	if oneOf(report, "notify.email.via", n.Email.Via, "smtp", "ses") && (wantsEmail || n.Email.From != "") {
		if !emailRe.MatchString(n.Email.From) {
			report("notify.email.from", "want the sender's e-mail address (got %q)", n.Email.From)
		}
		if n.Email.Via == "smtp" && n.SMTP.Host == "" {
			report("notify.smtp.host", "required to send e-mail through SMTP")
		}
	}
	if n.SMTP.Port < 1 || n.SMTP.Port > 65535 {
		report("notify.smtp.port", "want 1 to 65535 (got %d)", n.SMTP.Port)
	}
	for i, t := range n.SNS {
		if !topicARNRe.MatchString(t.TopicARN) {
			report(fmt.Sprintf("notify.sns[%d].topic_arn", i), "want an SNS topic ARN (got %q)", t.TopicARN)
		}
		events(fmt.Sprintf("notify.sns[%d].events", i), t.Events)
	}
	n.validateHooks(report)
}

// eventGlobs checks that each glob of a list of events matches an event.
func eventGlobs(report func(key, format string, args ...any), key string, globs []string) {
	for i, g := range globs {
		if _, err := path.Match(g, ""); err != nil || !slices.ContainsFunc(notify.Events, func(e string) bool { ok, _ := path.Match(g, e); return ok }) {
			report(fmt.Sprintf("%s[%d]", key, i), "%q matches no event (events: %s)", g, strings.Join(notify.Events, ", "))
		}
	}
}

// validateHooks checks the webhooks and Slack URLs: http(s) URLs (never quoted: they may hold a
// token), a signing key for each webhook, names of their own.
func (n *Notify) validateHooks(report func(key, format string, args ...any)) {
	events := func(key string, globs []string) { eventGlobs(report, key, globs) }
	httpURL := func(key, raw string) {
		if u, err := url.Parse(raw); raw == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			report(key, "want an http(s) URL") // not quoted: it may hold a token
		}
	}
	hookNames := map[string]bool{}
	for i, h := range n.Webhooks {
		key := fmt.Sprintf("notify.webhooks[%d]", i)
		httpURL(key+".url", h.URL.Reveal())
		if name := h.DestinationName(); name != "" {
			if hookNames[name] {
				report(key+".name", fmt.Sprintf("%q is taken by another webhook: give each a name of its own", name))
			}
			hookNames[name] = true
		}
		if h.Secret.IsZero() {
			report(key+".secret", "required: receivers check the signature made with it")
		}
		events(key+".events", h.Events)
	}
	names := map[string]bool{}
	for i, h := range n.Slack {
		key := fmt.Sprintf("notify.slack[%d]", i)
		httpURL(key+".url", h.URL.Reveal())
		if h.Name == "" || names[h.Name] {
			report(key+".name", "want a name of its own, to tell it apart in logs (the URL is secret)")
		}
		names[h.Name] = true
		events(key+".events", h.Events)
	}
}
