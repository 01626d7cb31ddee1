package cloud

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Outcomes of a cloud call, as Observed reports them.
const (
	CallOK        = "ok"
	CallNotFound  = "not_found"
	CallThrottled = "throttled"
	CallRefused   = "refused"
	CallError     = "error"
)

// CallOutcome classifies a call's error.
func CallOutcome(err error) string {
	switch {
	case err == nil:
		return CallOK
	case errors.Is(err, ErrNoSuchEntity):
		return CallNotFound
	case errors.Is(err, ErrThrottled):
		return CallThrottled
	case errors.Is(err, ErrKeyRefused):
		return CallRefused
	}
	return CallError
}

// Observed wraps a Provider and tells observe the operation and outcome of every call (for metrics).
func Observed(p Provider, observe func(operation, outcome string)) Provider {
	return &observed{p: p, observe: observe}
}

// Guarded wraps a Provider and calls before with the context and operation of every call, before
// it is made: tests use it to fail when the cloud is called while a write transaction is open.
func Guarded(p Provider, before func(ctx context.Context, operation string)) Provider {
	return &observed{p: p, before: before}
}

type observed struct {
	p       Provider
	observe func(operation, outcome string)
	before  func(ctx context.Context, operation string)
}

func (o *observed) enter(ctx context.Context, op string) {
	if o.before != nil {
		o.before(ctx, op)
	}
}

func (o *observed) done(op string, err error) error {
	if o.observe != nil {
		o.observe(op, CallOutcome(err))
	}
	return err
}

func (o *observed) Accounts(ctx context.Context) ([]Account, error) {
	o.enter(ctx, "Accounts")
	a, err := o.p.Accounts(ctx)
	return a, o.done("Accounts", err)
}

func (o *observed) ListUsers(ctx context.Context, accountID string, fn func(User) error) error {
	o.enter(ctx, "ListUsers")
	return o.done("ListUsers", o.p.ListUsers(ctx, accountID, fn))
}

func (o *observed) GetUser(ctx context.Context, accountID, userName string) (User, error) {
	o.enter(ctx, "GetUser")
	u, err := o.p.GetUser(ctx, accountID, userName)
	return u, o.done("GetUser", err)
}

func (o *observed) UserGroups(ctx context.Context, accountID, userName string) ([]string, error) {
	o.enter(ctx, "UserGroups")
	g, err := o.p.UserGroups(ctx, accountID, userName)
	return g, o.done("UserGroups", err)
}

func (o *observed) ListAccessKeys(ctx context.Context, accountID, userName string) ([]AccessKey, error) {
	o.enter(ctx, "ListAccessKeys")
	k, err := o.p.ListAccessKeys(ctx, accountID, userName)
	return k, o.done("ListAccessKeys", err)
}

func (o *observed) CreateAccessKey(ctx context.Context, accountID, userName string) (NewAccessKey, error) {
	o.enter(ctx, "CreateAccessKey")
	k, err := o.p.CreateAccessKey(ctx, accountID, userName)
	return k, o.done("CreateAccessKey", err)
}

func (o *observed) SetAccessKeyStatus(ctx context.Context, accountID, userName, keyID string, status KeyStatus) error {
	o.enter(ctx, "SetAccessKeyStatus")
	return o.done("SetAccessKeyStatus", o.p.SetAccessKeyStatus(ctx, accountID, userName, keyID, status))
}

func (o *observed) DeleteAccessKey(ctx context.Context, accountID, userName, keyID string) error {
	o.enter(ctx, "DeleteAccessKey")
	return o.done("DeleteAccessKey", o.p.DeleteAccessKey(ctx, accountID, userName, keyID))
}

func (o *observed) AccessKeyLastUsed(ctx context.Context, accountID, keyID string) (LastUsed, error) {
	o.enter(ctx, "AccessKeyLastUsed")
	lu, err := o.p.AccessKeyLastUsed(ctx, accountID, keyID)
	return lu, o.done("AccessKeyLastUsed", err)
}

func (o *observed) SessionToken(ctx context.Context, accountID, keyID string, s secret.Value, d time.Duration) (Session, error) {
	o.enter(ctx, "SessionToken")
	sess, err := o.p.SessionToken(ctx, accountID, keyID, s, d)
	return sess, o.done("SessionToken", err)
}

func (o *observed) Verify(ctx context.Context, accountID, keyID string, s secret.Value) (string, error) {
	o.enter(ctx, "Verify")
	arn, err := o.p.Verify(ctx, accountID, keyID, s)
	return arn, o.done("Verify", err)
}
