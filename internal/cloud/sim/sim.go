// Package sim is an in-memory cloud that enforces the IAM rules the rotation engine depends on: at
// most two keys per user (inactive ones count), NoSuchEntity for what does not exist, a delay before
// a new key works (IAM is eventually consistent), and paged listings. Throttling and failures can be
// injected. It serves the demo and unit tests; AWS behaviour itself is tested against moto.
package sim

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/secret"
)

// MaxKeysPerUser is IAM's limit.
const MaxKeysPerUser = 2

// PageSize is how many users one ListUsers page holds, as IAM's default MaxItems.
const PageSize = 100

// Fault decides whether a call fails: return nil to let it run. op is the Provider method's name.
type Fault func(op, accountID, userName string) error

// Cloud is the simulated cloud. It is safe for concurrent use.
type Cloud struct {
	mu       sync.Mutex
	now      func() time.Time
	delay    time.Duration
	fault    Fault
	accounts map[string]*account
	keys     map[string]*key // by key id, across accounts
	sessions map[string]*session
	calls    map[string]int
	pages    int
	// pathPrefix is what ListUsers is asked for (aws.user_path); policyPath the IAM path Keyward's
	// credentials are limited to (deploy/iam's UserPath): a call about a user outside it is refused.
	pathPrefix, policyPath string
}

type account struct {
	id       string
	users    map[string]*user
	rootKey  bool // the root user holds an active access key
	noReport bool // its credential report cannot be had
}

type user struct {
	cloud.User
	groups           []string
	keys             []*key
	created          time.Time
	console          bool
	passwordLastUsed time.Time
	mfa              int
}

// session is a set of temporary credentials (GetSessionToken): it acts as its user until it expires.
type session struct {
	secret, token secret.Value
	owner         *user
	expires       time.Time
}

type key struct {
	cloud.AccessKey
	secret   secret.Value
	owner    *user
	lastUsed cloud.LastUsed
}

var _ cloud.Provider = (*Cloud)(nil)

// Option configures a Cloud.
type Option func(*Cloud)

// WithClock makes the cloud read time from now.
func WithClock(now func() time.Time) Option { return func(c *Cloud) { c.now = now } }

// WithKeyDelay makes new keys work only after d, as IAM's take 5-20 s to work everywhere.
func WithKeyDelay(d time.Duration) Option { return func(c *Cloud) { c.delay = d } }

// WithFault injects failures.
func WithFault(f Fault) Option { return func(c *Cloud) { c.fault = f } }

// WithUserPath lists only the users under path, as IAM's ListUsers with PathPrefix (aws.user_path).
func WithUserPath(path string) Option { return func(c *Cloud) { c.pathPrefix = path } }

// WithPolicyPath limits Keyward's permissions to the users under path, as deploy/iam's member policy
// scoped to arn:aws:iam::*:user${UserPath}*: every per-user call about another user is refused
// (cloud.DeniedError naming the IAM action), and its tags cannot be listed.
func WithPolicyPath(path string) Option { return func(c *Cloud) { c.policyPath = path } }

// iamActions are the per-user operations the policy path governs, by Provider method.
var iamActions = map[string]string{"GetUser": "iam:GetUser", "UserGroups": "iam:ListGroupsForUser", "ListAccessKeys": "iam:ListAccessKeys",
	"CreateAccessKey": "iam:CreateAccessKey", "SetAccessKeyStatus": "iam:UpdateAccessKey", "DeleteAccessKey": "iam:DeleteAccessKey",
	"LoginProfile": "iam:GetLoginProfile", "MFADevices": "iam:ListMFADevices"}

// outsidePolicy says whether a user is outside the policy path. Callers hold c.mu.
func (c *Cloud) outsidePolicy(accountID, userName string) bool {
	if c.policyPath == "" || userName == "" {
		return false
	}
	a := c.accounts[accountID]
	if a == nil || a.users[userName] == nil {
		return false
	}
	return !strings.HasPrefix(a.users[userName].Path, c.policyPath)
}

// New returns an empty cloud.
func New(opts ...Option) *Cloud {
	c := &Cloud{now: time.Now, accounts: map[string]*account{}, keys: map[string]*key{}, calls: map[string]int{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// AddUser creates a user (and its account on first use).
func (c *Cloud) AddUser(accountID, name, path string, tags map[string]string, groups ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.accounts[accountID]
	if a == nil {
		a = &account{id: accountID, users: map[string]*user{}}
		c.accounts[accountID] = a
	}
	if path == "" {
		path = "/"
	}
	a.users[name] = &user{User: cloud.User{AccountID: accountID, Name: name, Path: path,
		ARN: "arn:aws:iam::" + accountID + ":user" + path + name, Tags: maps.Clone(tags)}, groups: groups, created: c.now().UTC()}
}

// AddKey gives a user a key created at a given time (a key that existed before Keyward), ignoring
// the key delay. It panics on a missing user or a third key: set-up code is wrong then.
func (c *Cloud) AddKey(accountID, userName string, createdAt time.Time, status cloud.KeyStatus) cloud.NewAccessKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, err := c.user(accountID, userName)
	if err != nil {
		panic(err)
	}
	k, err := c.newKey(u, createdAt.Add(-c.delay))
	if err != nil {
		panic(err)
	}
	k.CreatedAt, k.Status = createdAt, status
	return cloud.NewAccessKey{AccessKey: k.AccessKey, Secret: k.secret}
}

// UseKey records that a key signed a request at t (a consumer still using it).
func (c *Cloud) UseKey(keyID string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.keys[keyID]; k != nil {
		k.lastUsed = cloud.LastUsed{At: t, Service: "s3", Region: "us-east-1"}
	}
}

// Keys returns a user's keys with their secrets: what the cloud holds, for tests to compare.
func (c *Cloud) Keys(accountID, userName string) []cloud.NewAccessKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, err := c.user(accountID, userName)
	if err != nil {
		return nil
	}
	out := make([]cloud.NewAccessKey, len(u.keys))
	for i, k := range u.keys {
		out[i] = cloud.NewAccessKey{AccessKey: k.AccessKey, Secret: k.secret}
	}
	return out
}

// Calls returns how many times each operation was called.
func (c *Cloud) Calls() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.calls)
}

// Pages returns how many ListUsers pages were served.
func (c *Cloud) Pages() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pages
}

// enter counts a call and applies the injected fault. Callers hold c.mu.
func (c *Cloud) enter(op, accountID, userName string) error {
	c.calls[op]++
	if action, ok := iamActions[op]; ok && c.outsidePolicy(accountID, userName) {
		return &cloud.DeniedError{Action: action, Doing: op + " " + userName, Err: cloud.ErrAccessDenied}
	}
	if c.fault != nil {
		if err := c.fault(op, accountID, userName); err != nil {
			return fmt.Errorf("%s %s/%s: %w", op, accountID, userName, err)
		}
	}
	return nil
}

func (c *Cloud) user(accountID, name string) (*user, error) {
	a := c.accounts[accountID]
	if a == nil {
		return nil, fmt.Errorf("account %s: %w", accountID, cloud.ErrNoSuchEntity)
	}
	u := a.users[name]
	if u == nil {
		return nil, fmt.Errorf("user %s in %s: %w", name, accountID, cloud.ErrNoSuchEntity)
	}
	return u, nil
}

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (c *Cloud) newKey(u *user, created time.Time) (*key, error) {
	if len(u.keys) >= MaxKeysPerUser {
		return nil, fmt.Errorf("user %s holds %d keys: %w", u.Name, len(u.keys), cloud.ErrLimitExceeded)
	}
	k := &key{AccessKey: cloud.AccessKey{ID: "AKIA" + randomString(keyAlphabet, 16), Status: cloud.KeyActive, CreatedAt: created},
		secret: secret.New(randomString(secretAlphabet, 40)), owner: u}
	u.keys = append(u.keys, k)
	c.keys[k.ID] = k
	return k, nil
}

// Accounts implements cloud.Provider.
func (c *Cloud) Accounts(context.Context) ([]cloud.Account, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("Accounts", "", ""); err != nil {
		return nil, err
	}
	ids := slices.Sorted(maps.Keys(c.accounts))
	out := make([]cloud.Account, len(ids))
	for i, id := range ids {
		out[i] = cloud.Account{ID: id}
	}
	return out, nil
}

// ListUsers implements cloud.Provider, a page of PageSize users at a time, as IAM pages.
func (c *Cloud) ListUsers(ctx context.Context, accountID string, fn func(cloud.User) error) error {
	marker := ""
	for {
		page, next, err := c.listUsersPage(accountID, marker)
		if err != nil {
			return err
		}
		for _, u := range page {
			if err := fn(u); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		marker = next
	}
}

// listUsersPage returns the users after marker, in name order, and the marker of the next page.
func (c *Cloud) listUsersPage(accountID, marker string) ([]cloud.User, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("ListUsers", accountID, ""); err != nil {
		return nil, "", err
	}
	a := c.accounts[accountID]
	if a == nil {
		return nil, "", fmt.Errorf("account %s: %w", accountID, cloud.ErrNoSuchEntity)
	}
	c.pages++
	var names []string
	for n, u := range a.users {
		if strings.HasPrefix(u.Path, c.pathPrefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	start := sort.SearchStrings(names, marker)
	if marker != "" && start < len(names) && names[start] == marker {
		start++
	}
	end := min(start+PageSize, len(names))
	page := make([]cloud.User, 0, end-start)
	for _, n := range names[start:end] {
		u := a.users[n].User
		u.Tags = maps.Clone(u.Tags)
		if c.outsidePolicy(accountID, n) {
			u.Tags, u.Denied = map[string]string{}, "iam:ListUserTags"
		}
		page = append(page, u)
	}
	next := ""
	if end < len(names) {
		next = names[end-1]
	}
	return page, next, nil
}

// GetUser implements cloud.Provider.
func (c *Cloud) GetUser(_ context.Context, accountID, userName string) (cloud.User, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("GetUser", accountID, userName); err != nil {
		return cloud.User{}, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return cloud.User{}, err
	}
	out := u.User
	out.Tags = maps.Clone(u.Tags)
	return out, nil
}

// UserGroups implements cloud.Provider.
func (c *Cloud) UserGroups(_ context.Context, accountID, userName string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("UserGroups", accountID, userName); err != nil {
		return nil, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return nil, err
	}
	return slices.Clone(u.groups), nil
}

// ListAccessKeys implements cloud.Provider.
func (c *Cloud) ListAccessKeys(_ context.Context, accountID, userName string) ([]cloud.AccessKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("ListAccessKeys", accountID, userName); err != nil {
		return nil, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return nil, err
	}
	out := make([]cloud.AccessKey, len(u.keys))
	for i, k := range u.keys {
		out[i] = k.AccessKey
	}
	return out, nil
}

// CreateAccessKey implements cloud.Provider.
func (c *Cloud) CreateAccessKey(_ context.Context, accountID, userName string) (cloud.NewAccessKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("CreateAccessKey", accountID, userName); err != nil {
		return cloud.NewAccessKey{}, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return cloud.NewAccessKey{}, err
	}
	k, err := c.newKey(u, c.now().UTC())
	if err != nil {
		return cloud.NewAccessKey{}, err
	}
	// A fault on "CreateAccessKey.answer" loses the answer of a call that did create the key, as a
	// connection cut after the request reached IAM does.
	if c.fault != nil {
		if err := c.fault("CreateAccessKey.answer", accountID, userName); err != nil {
			return cloud.NewAccessKey{}, fmt.Errorf("CreateAccessKey %s/%s: %w", accountID, userName, err)
		}
	}
	return cloud.NewAccessKey{AccessKey: k.AccessKey, Secret: k.secret}, nil
}

func (c *Cloud) ownedKey(accountID, userName, keyID string) (*key, error) {
	u, err := c.user(accountID, userName)
	if err != nil {
		return nil, err
	}
	k := c.keys[keyID]
	if k == nil || k.owner != u {
		return nil, fmt.Errorf("key %s of %s: %w", keyID, userName, cloud.ErrNoSuchEntity)
	}
	return k, nil
}

// SetAccessKeyStatus implements cloud.Provider.
func (c *Cloud) SetAccessKeyStatus(_ context.Context, accountID, userName, keyID string, status cloud.KeyStatus) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("SetAccessKeyStatus", accountID, userName); err != nil {
		return err
	}
	if status != cloud.KeyActive && status != cloud.KeyInactive {
		return fmt.Errorf("status %q: want Active or Inactive", status)
	}
	k, err := c.ownedKey(accountID, userName, keyID)
	if err != nil {
		return err
	}
	k.Status = status
	return nil
}

// DeleteAccessKey implements cloud.Provider.
func (c *Cloud) DeleteAccessKey(_ context.Context, accountID, userName, keyID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("DeleteAccessKey", accountID, userName); err != nil {
		return err
	}
	k, err := c.ownedKey(accountID, userName, keyID)
	if err != nil {
		return err
	}
	k.owner.keys = slices.DeleteFunc(k.owner.keys, func(o *key) bool { return o == k })
	delete(c.keys, keyID)
	return nil
}

// AccessKeyLastUsed implements cloud.Provider.
func (c *Cloud) AccessKeyLastUsed(_ context.Context, accountID, keyID string) (cloud.LastUsed, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("AccessKeyLastUsed", accountID, ""); err != nil {
		return cloud.LastUsed{}, err
	}
	k := c.keys[keyID]
	if k == nil || k.owner.AccountID != accountID {
		return cloud.LastUsed{}, fmt.Errorf("key %s: %w", keyID, cloud.ErrNoSuchEntity)
	}
	lu := k.lastUsed
	lu.UserName = k.owner.Name
	return lu, nil
}

// Verify implements cloud.Provider as STS GetCallerIdentity would: the key must exist, be active,
// have worked for the key delay, and the secret must match. A verification counts as a use.
func (c *Cloud) Verify(_ context.Context, accountID, keyID string, s secret.Value) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("Verify", accountID, ""); err != nil {
		return "", err
	}
	k := c.keys[keyID]
	now := c.now()
	switch {
	case k == nil, !k.secret.Equal(s), k.Status != cloud.KeyActive:
		return "", fmt.Errorf("verify %s: %w", keyID, cloud.ErrKeyRefused)
	case now.Before(k.CreatedAt.Add(c.delay)):
		return "", fmt.Errorf("verify %s: not yet usable: %w", keyID, cloud.ErrKeyRefused)
	}
	k.lastUsed = cloud.LastUsed{At: now.UTC(), Service: "sts", Region: "us-east-1"}
	return k.owner.ARN, nil
}

// SessionToken implements cloud.Provider: temporary credentials that act as the key's user until
// they expire (whatever becomes of the key meanwhile, as with STS).
func (c *Cloud) SessionToken(_ context.Context, accountID, keyID string, s secret.Value, d time.Duration) (cloud.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("SessionToken", accountID, ""); err != nil {
		return cloud.Session{}, err
	}
	k := c.keys[keyID]
	now := c.now()
	if k == nil || !k.secret.Equal(s) || k.Status != cloud.KeyActive || now.Before(k.CreatedAt.Add(c.delay)) {
		return cloud.Session{}, fmt.Errorf("session token with %s: %w", keyID, cloud.ErrKeyRefused)
	}
	if d < cloud.MinSessionDuration || d > cloud.MaxSessionDuration {
		return cloud.Session{}, fmt.Errorf("session token with %s: duration %s out of range", keyID, d)
	}
	k.lastUsed = cloud.LastUsed{At: now.UTC(), Service: "sts", Region: "us-east-1"}
	sess := &session{secret: secret.New(randomString(secretAlphabet, 40)), token: secret.New(randomString(secretAlphabet, 120)),
		owner: k.owner, expires: now.Add(d).UTC().Truncate(time.Second)}
	if c.sessions == nil {
		c.sessions = map[string]*session{}
	}
	id := "ASIA" + randomString(keyAlphabet, 16)
	c.sessions[id] = sess
	return cloud.Session{AccessKeyID: id, SecretAccessKey: sess.secret, SessionToken: sess.token, Expiration: sess.expires}, nil
}

// CallerIdentity answers GetCallerIdentity for any credentials: a long-lived key (token empty) or a
// session. It is how a simulated consumer uses what it was given.
func (c *Cloud) CallerIdentity(keyID string, s, token secret.Value) (string, error) {
	if token.IsZero() {
		return c.Verify(context.Background(), "", keyID, s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sess := c.sessions[keyID]
	switch {
	case sess == nil, !sess.secret.Equal(s), !sess.token.Equal(token):
		return "", fmt.Errorf("session %s: %w", keyID, cloud.ErrKeyRefused)
	case !c.now().Before(sess.expires):
		return "", fmt.Errorf("session %s expired at %s: %w", keyID, sess.expires.Format(time.RFC3339), cloud.ErrKeyRefused)
	}
	return sess.owner.ARN, nil
}

var _ cloud.Inventory = (*Cloud)(nil)

// SetConsole gives a user a console password (last used at lastUsed; zero: never) and MFA devices.
func (c *Cloud) SetConsole(accountID, userName string, console bool, lastUsed time.Time, mfaDevices int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, err := c.user(accountID, userName); err == nil {
		u.console, u.passwordLastUsed, u.mfa = console, lastUsed, mfaDevices
	}
}

// SetRootKey says whether the account's root user holds an active access key.
func (c *Cloud) SetRootKey(accountID string, active bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.accounts[accountID]; a != nil {
		a.rootKey = active
	}
}

// SetReportUnavailable makes the account's credential report unavailable (as without the permission).
func (c *Cloud) SetReportUnavailable(accountID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.accounts[accountID]; a != nil {
		a.noReport = true
	}
}

// CredentialReport implements cloud.Inventory from the simulated account's state.
func (c *Cloud) CredentialReport(_ context.Context, accountID string) ([]cloud.ReportRow, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("CredentialReport", accountID, ""); err != nil {
		return nil, time.Time{}, err
	}
	a := c.accounts[accountID]
	if a == nil || a.noReport {
		return nil, time.Time{}, fmt.Errorf("report of %s: %w", accountID, cloud.ErrReportUnavailable)
	}
	rows := []cloud.ReportRow{{User: cloud.RootUser, ARN: "arn:aws:iam::" + accountID + ":root", Keys: [2]cloud.ReportKey{{Active: a.rootKey}}}}
	for _, name := range slices.Sorted(maps.Keys(a.users)) {
		u := a.users[name]
		row := cloud.ReportRow{User: u.Name, ARN: u.ARN, UserCreated: u.created, PasswordEnabled: u.console,
			PasswordLastUsed: u.passwordLastUsed, MFAActive: u.mfa > 0}
		for i, k := range u.keys {
			if i < 2 {
				row.Keys[i] = cloud.ReportKey{Active: k.Status == cloud.KeyActive, LastRotated: k.CreatedAt, LastUsed: k.lastUsed.At,
					LastUsedService: k.lastUsed.Service, LastUsedRegion: k.lastUsed.Region}
			}
		}
		rows = append(rows, row)
	}
	return rows, c.now().UTC(), nil
}

// LoginProfile implements cloud.Inventory.
func (c *Cloud) LoginProfile(_ context.Context, accountID, userName string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("LoginProfile", accountID, userName); err != nil {
		return false, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return false, err
	}
	return u.console, nil
}

// MFADevices implements cloud.Inventory.
func (c *Cloud) MFADevices(_ context.Context, accountID, userName string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("MFADevices", accountID, userName); err != nil {
		return 0, err
	}
	u, err := c.user(accountID, userName)
	if err != nil {
		return 0, err
	}
	return u.mfa, nil
}
