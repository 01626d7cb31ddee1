// Package awsiam is the AWS implementation of cloud.Provider, on the AWS SDK for Go v2: IAM for users
// and keys, STS to verify a key by signing with it and to assume a role in each member account, and
// Organizations to discover accounts. Every call to an account passes that account's client-side rate
// limiter first; the SDK's adaptive retry absorbs throttling, which is counted and logged, never fatal.
package awsiam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	orgtypes "github.com/aws/aws-sdk-go-v2/service/organizations/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/time/rate"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/secret"
)

// AccountConfig names a member account and the role Keyward assumes in it.
type AccountConfig struct {
	ID         string
	RoleARN    string
	ExternalID string
	// UserPath, when set, lists only the users under this IAM path (ListUsers' PathPrefix): the
	// path a least-privilege policy is scoped to (deploy/iam's UserPath). "": Options.UserPath.
	UserPath string
}

// Options configures the provider.
type Options struct {
	// Accounts to manage. Empty (and no OrganizationRoleName): the account of the ambient credentials.
	Accounts []AccountConfig
	// OrganizationRoleName, when set, discovers the organization's active accounts and assumes
	// arn:aws:iam::<account>:role/<name> in each.
	OrganizationRoleName string
	// OrganizationExternalID is the external id the discovered accounts' roles require ("": none).
	OrganizationExternalID string
	// UserPath is the IAM path whose users are managed in every account that does not set its own
	// ("" or "/": every user).
	UserPath string
	// MaxRPS is the client-side limit of requests per second to each account (default 5).
	MaxRPS float64
	Logger *slog.Logger
}

// Provider talks to AWS.
type Provider struct {
	base      aws.Config
	opts      Options
	log       *slog.Logger
	throttles atomic.Int64

	mu      sync.Mutex
	roles   map[string]AccountConfig // account id → how to reach it
	clients map[string]*iam.Client
}

var _ cloud.Provider = (*Provider)(nil)

// New returns a provider over cfg (region, endpoint and ambient credentials already set). It uses
// the SDK's adaptive retry mode, which slows down when AWS throttles.
func New(cfg aws.Config, opts Options) *Provider {
	if opts.MaxRPS <= 0 {
		opts.MaxRPS = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.Copy()
	p := &Provider{opts: opts, log: opts.Logger, roles: map[string]AccountConfig{}, clients: map[string]*iam.Client{}}
	cfg.Retryer = func() aws.Retryer { return &throttleCounter{RetryerV2: retry.NewAdaptiveMode(), p: p} }
	p.base = cfg
	for _, a := range opts.Accounts {
		p.roles[a.ID] = a
	}
	return p
}

// Throttles returns how many requests AWS has throttled (each retried by the SDK's adaptive mode).
func (p *Provider) Throttles() int64 { return p.throttles.Load() }

// throttleCounter is the SDK's adaptive retryer, counting and logging every throttled attempt it sees.
type throttleCounter struct {
	aws.RetryerV2
	p *Provider
}

func (t *throttleCounter) IsErrorRetryable(err error) bool {
	if code, ok := throttleCode(err); ok {
		t.p.throttles.Add(1)
		t.p.log.Warn("AWS throttled a request; the SDK slows down and retries", "code", code)
	}
	return t.RetryerV2.IsErrorRetryable(err)
}

// throttleCode reports whether err is AWS asking the client to slow down.
func throttleCode(err error) (string, bool) {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled", "SlowDown":
			return api.ErrorCode(), true
		}
	}
	return "", false
}

// deniedAction names the IAM action of a refused call, from the SDK's operation ("iam:ListUserTags").
func deniedAction(err error) string {
	var op *smithy.OperationError
	if errors.As(err, &op) {
		return strings.ToLower(op.Service()) + ":" + op.Operation()
	}
	return "an action"
}

// Accounts implements cloud.Provider.
func (p *Provider) Accounts(ctx context.Context) ([]cloud.Account, error) {
	switch {
	case p.opts.OrganizationRoleName != "":
		return p.organizationAccounts(ctx)
	case len(p.opts.Accounts) > 0:
		out := make([]cloud.Account, len(p.opts.Accounts))
		for i, a := range p.opts.Accounts {
			out[i] = cloud.Account{ID: a.ID}
		}
		return out, nil
	}
	id, err := sts.NewFromConfig(p.base).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, p.wrap("discover the account of the ambient credentials", err)
	}
	return []cloud.Account{{ID: aws.ToString(id.Account)}}, nil
}

func (p *Provider) organizationAccounts(ctx context.Context) ([]cloud.Account, error) {
	var out []cloud.Account
	pages := organizations.NewListAccountsPaginator(organizations.NewFromConfig(p.base), &organizations.ListAccountsInput{})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, p.wrap("list organization accounts", err)
		}
		for _, a := range page.Accounts {
			if a.Status != orgtypes.AccountStatusActive {
				continue
			}
			id := aws.ToString(a.Id)
			out = append(out, cloud.Account{ID: id, Name: aws.ToString(a.Name)})
			p.mu.Lock()
			if _, known := p.roles[id]; !known {
				p.roles[id] = p.orgRole(id)
			}
			p.mu.Unlock()
		}
	}
	return out, nil
}

// orgRole is the role assumed in an account of the organization.
func (p *Provider) orgRole(accountID string) AccountConfig {
	return AccountConfig{ID: accountID, RoleARN: "arn:aws:iam::" + accountID + ":role/" + p.opts.OrganizationRoleName,
		ExternalID: p.opts.OrganizationExternalID}
}

// client returns the IAM client of an account, assuming its role when it has one. Every request it
// sends, page by page, first waits for the account's rate limiter.
func (p *Provider) client(accountID string) *iam.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.clients[accountID]; c != nil {
		return c
	}
	cfg := p.base.Copy()
	role, known := p.roles[accountID]
	if !known && p.opts.OrganizationRoleName != "" {
		// An account of the organization not listed yet in this process (a leak answered before
		// any pass): its role is the organization's, as listing would have named it.
		role = p.orgRole(accountID)
	}
	if role.RoleARN != "" {
		assume := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(p.base), role.RoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "keyward"
			if role.ExternalID != "" {
				o.ExternalID = aws.String(role.ExternalID)
			}
		})
		cfg.Credentials = aws.NewCredentialsCache(assume)
	}
	limiter := rate.NewLimiter(rate.Limit(p.opts.MaxRPS), 1)
	c := iam.NewFromConfig(cfg, func(o *iam.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("KeywardRateLimit",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if err := limiter.Wait(ctx); err != nil {
						return middleware.InitializeOutput{}, middleware.Metadata{}, err
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	})
	p.clients[accountID] = c
	return c
}

// userPath is the IAM path whose users are managed in an account.
func (p *Provider) userPath(accountID string) string {
	p.mu.Lock()
	role := p.roles[accountID]
	p.mu.Unlock()
	if role.UserPath != "" {
		return role.UserPath
	}
	return p.opts.UserPath
}

// deniedCodes are the error codes AWS services answer a call the caller's policies do not allow.
var deniedCodes = map[string]bool{"AccessDenied": true, "AccessDeniedException": true, "UnauthorizedOperation": true}

// credentialCodes are 403s that say the credentials themselves are wrong, not that they lack a
// permission: never taken for a user outside Keyward's permissions.
var credentialCodes = map[string]bool{"SignatureDoesNotMatch": true, "InvalidClientTokenId": true, "ExpiredToken": true,
	"IncompleteSignature": true, "MissingAuthenticationToken": true, "InvalidAccessKeyId": true, "RequestExpired": true}

// denied says whether err is a call the caller's policies refused: its code says so, or it is a 403
// whose code is not about the credentials (an emulator, or a proxy, that answers 403 without a code).
func denied(err error) bool {
	var api smithy.APIError
	code := ""
	if errors.As(err, &api) {
		code = api.ErrorCode()
	}
	if deniedCodes[code] {
		return true
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() == 403 && !credentialCodes[code]
}

// wrap translates an AWS error into the cloud package's errors, saying what was being done.
func (p *Provider) wrap(doing string, err error) error {
	if denied(err) {
		return &cloud.DeniedError{Action: deniedAction(err), Doing: doing, Err: err}
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchEntity":
			return fmt.Errorf("%s: %w (%s)", doing, cloud.ErrNoSuchEntity, api.ErrorMessage())
		case "LimitExceeded":
			return fmt.Errorf("%s: %w (%s)", doing, cloud.ErrLimitExceeded, api.ErrorMessage())
		}
	}
	if _, ok := throttleCode(err); ok {
		// Counted as it happened, by throttleCounter; here the retries have run out.
		p.log.Warn("AWS throttling outlasted the retries: this user is retried at the next pass", "doing", doing)
		return fmt.Errorf("%s: %w", doing, cloud.ErrThrottled)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// ListUsers implements cloud.Provider with IAM's paginator.
func (p *Provider) ListUsers(ctx context.Context, accountID string, fn func(cloud.User) error) error {
	c := p.client(accountID)
	in := &iam.ListUsersInput{}
	if path := p.userPath(accountID); path != "" && path != "/" {
		in.PathPrefix = aws.String(path)
	}
	pages := iam.NewListUsersPaginator(c, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return p.wrap("list users of "+accountID, err)
		}
		for _, u := range page.Users {
			user := cloud.User{AccountID: accountID, Name: aws.ToString(u.UserName), Path: aws.ToString(u.Path), ARN: aws.ToString(u.Arn)}
			// ListUsers does not return tags; the policy needs them, so ask per user. A user outside
			// Keyward's permissions is passed on as such: it never fails the account's listing.
			tags, err := p.userTags(ctx, c, user.Name)
			if action, denied := cloud.DeniedAction(err); denied {
				user.Denied, tags = action, map[string]string{}
			} else if err != nil {
				return err
			}
			user.Tags = tags
			if err := fn(user); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetUser implements cloud.Provider: IAM's GetUser, and its tags.
func (p *Provider) GetUser(ctx context.Context, accountID, userName string) (cloud.User, error) {
	c := p.client(accountID)
	out, err := c.GetUser(ctx, &iam.GetUserInput{UserName: aws.String(userName)})
	if err != nil {
		return cloud.User{}, p.wrap("get user "+userName, err)
	}
	u := out.User
	user := cloud.User{AccountID: accountID, Name: aws.ToString(u.UserName), Path: aws.ToString(u.Path), ARN: aws.ToString(u.Arn)}
	// GetUser returns at most some tags; the full list comes from ListUserTags.
	if user.Tags, err = p.userTags(ctx, c, user.Name); err != nil {
		return cloud.User{}, err
	}
	return user, nil
}

func (p *Provider) userTags(ctx context.Context, c *iam.Client, userName string) (map[string]string, error) {
	tags := map[string]string{}
	pages := iam.NewListUserTagsPaginator(c, &iam.ListUserTagsInput{UserName: aws.String(userName)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, p.wrap("list tags of "+userName, err)
		}
		for _, t := range page.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	return tags, nil
}

// UserGroups implements cloud.Provider.
func (p *Provider) UserGroups(ctx context.Context, accountID, userName string) ([]string, error) {
	c := p.client(accountID)
	var groups []string
	pages := iam.NewListGroupsForUserPaginator(c, &iam.ListGroupsForUserInput{UserName: aws.String(userName)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, p.wrap("list groups of "+userName, err)
		}
		for _, g := range page.Groups {
			groups = append(groups, aws.ToString(g.GroupName))
		}
	}
	return groups, nil
}

// ListAccessKeys implements cloud.Provider.
func (p *Provider) ListAccessKeys(ctx context.Context, accountID, userName string) ([]cloud.AccessKey, error) {
	c := p.client(accountID)
	out, err := c.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String(userName)})
	if err != nil {
		return nil, p.wrap("list access keys of "+userName, err)
	}
	keys := make([]cloud.AccessKey, len(out.AccessKeyMetadata))
	for i, k := range out.AccessKeyMetadata {
		keys[i] = cloud.AccessKey{ID: aws.ToString(k.AccessKeyId), Status: cloud.KeyStatus(k.Status), CreatedAt: aws.ToTime(k.CreateDate).UTC()}
	}
	return keys, nil
}

// CreateAccessKey implements cloud.Provider.
func (p *Provider) CreateAccessKey(ctx context.Context, accountID, userName string) (cloud.NewAccessKey, error) {
	c := p.client(accountID)
	// Retried by the SDK only when throttled (refused before anything was made): a retry after a
	// lost answer would make a second key, or hit the limit of two. The engine settles a failed call
	// itself (rotation's create step) and tries again later.
	out, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(userName)}, func(o *iam.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			throttle := retry.ThrottleErrorCode{Codes: retry.DefaultThrottleErrorCodes}
			so.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(throttle.IsErrorThrottle)}
		})
	})
	if err != nil {
		return cloud.NewAccessKey{}, p.wrap("create access key for "+userName, err)
	}
	k := out.AccessKey
	return cloud.NewAccessKey{
		AccessKey: cloud.AccessKey{ID: aws.ToString(k.AccessKeyId), Status: cloud.KeyStatus(k.Status), CreatedAt: aws.ToTime(k.CreateDate).UTC()},
		Secret:    secret.New(aws.ToString(k.SecretAccessKey)),
	}, nil
}

// SetAccessKeyStatus implements cloud.Provider.
func (p *Provider) SetAccessKeyStatus(ctx context.Context, accountID, userName, keyID string, status cloud.KeyStatus) error {
	c := p.client(accountID)
	_, err := c.UpdateAccessKey(ctx, &iam.UpdateAccessKeyInput{UserName: aws.String(userName), AccessKeyId: aws.String(keyID),
		Status: iamtypes.StatusType(status)})
	if err != nil {
		return p.wrap(fmt.Sprintf("set key %s of %s %s", keyID, userName, status), err)
	}
	return nil
}

// DeleteAccessKey implements cloud.Provider.
func (p *Provider) DeleteAccessKey(ctx context.Context, accountID, userName, keyID string) error {
	c := p.client(accountID)
	if _, err := c.DeleteAccessKey(ctx, &iam.DeleteAccessKeyInput{UserName: aws.String(userName), AccessKeyId: aws.String(keyID)}); err != nil {
		return p.wrap(fmt.Sprintf("delete key %s of %s", keyID, userName), err)
	}
	return nil
}

// AccessKeyLastUsed implements cloud.Provider.
func (p *Provider) AccessKeyLastUsed(ctx context.Context, accountID, keyID string) (cloud.LastUsed, error) {
	c := p.client(accountID)
	out, err := c.GetAccessKeyLastUsed(ctx, &iam.GetAccessKeyLastUsedInput{AccessKeyId: aws.String(keyID)})
	if err != nil {
		return cloud.LastUsed{}, p.wrap("last use of key "+keyID, err)
	}
	lu := out.AccessKeyLastUsed
	if lu == nil {
		return cloud.LastUsed{UserName: aws.ToString(out.UserName)}, nil
	}
	return cloud.LastUsed{At: aws.ToTime(lu.LastUsedDate).UTC(), Service: aws.ToString(lu.ServiceName), Region: aws.ToString(lu.Region),
		UserName: aws.ToString(out.UserName)}, nil
}

// SessionToken implements cloud.Provider: STS GetSessionToken signed with the key itself, once.
func (p *Provider) SessionToken(ctx context.Context, accountID, keyID string, s secret.Value, d time.Duration) (cloud.Session, error) {
	client := sts.NewFromConfig(p.base, func(o *sts.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(keyID, s.Reveal(), "")
		o.Retryer = aws.NopRetryer{}
	})
	out, err := client.GetSessionToken(ctx, &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(int32(d / time.Second))})
	if err != nil {
		var resp *smithyhttp.ResponseError
		if errors.As(err, &resp) && resp.HTTPStatusCode() == 403 {
			return cloud.Session{}, fmt.Errorf("session token with key %s: %w (HTTP 403)", keyID, cloud.ErrKeyRefused)
		}
		return cloud.Session{}, p.wrap("session token with key "+keyID, err)
	}
	c := out.Credentials
	return cloud.Session{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: secret.New(aws.ToString(c.SecretAccessKey)),
		SessionToken: secret.New(aws.ToString(c.SessionToken)), Expiration: aws.ToTime(c.Expiration).UTC()}, nil
}

// Verify implements cloud.Provider: STS GetCallerIdentity signed with the key itself, once, without
// the SDK's retries (the engine paces verification attempts itself).
func (p *Provider) Verify(ctx context.Context, accountID, keyID string, s secret.Value) (string, error) {
	client := sts.NewFromConfig(p.base, func(o *sts.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(keyID, s.Reveal(), "")
		o.Retryer = aws.NopRetryer{}
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		// GetCallerIdentity needs no permission: a 403 always means the key itself was refused
		// (InvalidClientTokenId, SignatureDoesNotMatch, an inactive key), whatever the body says.
		var resp *smithyhttp.ResponseError
		if errors.As(err, &resp) && resp.HTTPStatusCode() == 403 {
			return "", fmt.Errorf("verify key %s: %w (HTTP 403)", keyID, cloud.ErrKeyRefused)
		}
		return "", p.wrap("verify key "+keyID, err)
	}
	if got := aws.ToString(out.Account); got != accountID {
		return "", fmt.Errorf("verify key %s: it belongs to account %s, not %s: %w", keyID, got, accountID, cloud.ErrKeyRefused)
	}
	return aws.ToString(out.Arn), nil
}
