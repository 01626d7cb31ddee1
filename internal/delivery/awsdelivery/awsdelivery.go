// Package awsdelivery is the AWS implementation of delivery.Destination, on the AWS SDK for Go v2:
// Secrets Manager, written as AWS's own rotation protocol writes it (a version staged AWSPENDING under
// an idempotency token, read back, then AWSCURRENT moved to it and the old one left AWSPREVIOUS), and
// SSM Parameter Store (a SecureString overwritten, its versions labelled current and previous).
// Targets are written with Keyward's own credentials, in the target's region.
package awsdelivery

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/keyward/keyward/internal/delivery"
)

// Destination writes to Secrets Manager and Parameter Store.
type Destination struct {
	base aws.Config

	mu      sync.Mutex
	secrets map[string]*secretsmanager.Client // by region
	params  map[string]*ssm.Client
}

var _ delivery.Destination = (*Destination)(nil)

// New returns a destination over cfg (credentials and endpoint set; the region is each target's).
func New(cfg aws.Config) *Destination {
	return &Destination{base: cfg.Copy(), secrets: map[string]*secretsmanager.Client{}, params: map[string]*ssm.Client{}}
}

func (d *Destination) sm(region string) *secretsmanager.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.secrets[region]; c != nil {
		return c
	}
	c := secretsmanager.NewFromConfig(d.base, func(o *secretsmanager.Options) { o.Region = region })
	d.secrets[region] = c
	return c
}

func (d *Destination) ssm(region string) *ssm.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.params[region]; c != nil {
		return c
	}
	c := ssm.NewFromConfig(d.base, func(o *ssm.Options) { o.Region = region })
	d.params[region] = c
	return c
}

// Stage implements delivery.Destination.
func (d *Destination) Stage(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	if s.Kind == delivery.SSMParameter {
		return d.stageParameter(ctx, s, p)
	}
	return d.stageSecret(ctx, s, p)
}

// Publish implements delivery.Destination.
func (d *Destination) Publish(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	if s.Kind == delivery.SSMParameter {
		return d.publishParameter(ctx, s, p)
	}
	return d.publishSecret(ctx, s, p)
}

// Withdraw implements delivery.Destination.
func (d *Destination) Withdraw(ctx context.Context, s delivery.Spec, p delivery.Payload, old *delivery.Payload) error {
	if s.Kind == delivery.SSMParameter {
		return d.withdrawParameter(ctx, s, p, old)
	}
	return d.withdrawSecret(ctx, s, p, old)
}

// Current implements delivery.Destination.
func (d *Destination) Current(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	if s.Kind == delivery.SSMParameter {
		return d.currentParameter(ctx, s)
	}
	return d.currentSecret(ctx, s)
}

// Forget implements delivery.Destination.
func (d *Destination) Forget(ctx context.Context, s delivery.Spec, keyID string) error {
	if s.Kind == delivery.SSMParameter {
		return d.forgetParameter(ctx, s, keyID)
	}
	return d.forgetSecret(ctx, s, keyID)
}

// errorCode is the AWS error code of err, if it is one.
func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// fail says what was being done to which target. AWS's messages about these calls never quote the
// value written.
func fail(doing string, s delivery.Spec, err error) error {
	return fmt.Errorf("%s %s: %w", doing, s.Key(), err)
}
