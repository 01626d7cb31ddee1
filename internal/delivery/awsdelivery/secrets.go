package awsdelivery

import (
	"context"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// Staging labels of Secrets Manager.
const (
	stageCurrent  = "AWSCURRENT"
	stagePending  = "AWSPENDING"
	stagePrevious = "AWSPREVIOUS"
)

// secretState is a secret's versions by staging label, as DescribeSecret tells them (no values).
type secretState struct {
	exists   bool
	versions map[string][]string // version id → labels
}

// labelled returns the id of the version holding a label ("" when none does).
func (st secretState) labelled(label string) string {
	for id, labels := range st.versions {
		if slices.Contains(labels, label) {
			return id
		}
	}
	return ""
}

// describe reads a secret's versions and checks that Keyward may write to it.
func (d *Destination) describe(ctx context.Context, s delivery.Spec) (secretState, error) {
	out, err := d.sm(s.Region).DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(s.Name)})
	if errorCode(err) == "ResourceNotFoundException" {
		return secretState{}, nil
	} else if err != nil {
		return secretState{}, fail("describe", s, err)
	}
	ours := slices.ContainsFunc(out.Tags, func(t smtypes.Tag) bool {
		return aws.ToString(t.Key) == delivery.TagManaged && aws.ToString(t.Value) == "true"
	})
	if !ours && !s.Adopt {
		return secretState{}, fmt.Errorf("%s: %w (set adopt: true to write to it)", s.Key(), delivery.ErrNotOurs)
	}
	return secretState{exists: true, versions: out.VersionIdsToStages}, nil
}

// stageSecret puts p as a version labelled AWSPENDING (created with the secret when it is missing:
// the first version of a secret is also AWSCURRENT), unless the token's version exists, and checks
// what the version holds. The token is the version's id, so a retry never writes other content.
func (d *Destination) stageSecret(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	st, err := d.describe(ctx, s)
	if err != nil {
		return err
	}
	c := d.sm(s.Region)
	if !st.exists {
		in := &secretsmanager.CreateSecretInput{Name: aws.String(s.Name),
			Description: aws.String("An access key kept current by Keyward"),
			Tags:        []smtypes.Tag{{Key: aws.String(delivery.TagManaged), Value: aws.String("true")}}}
		if s.KMSKeyID != "" {
			in.KmsKeyId = aws.String(s.KMSKeyID)
		}
		if _, err := c.CreateSecret(ctx, in); err != nil && errorCode(err) != "ResourceExistsException" {
			return fail("create", s, err)
		}
	}
	if _, staged := st.versions[p.Token]; !staged {
		_, err := c.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(s.Name),
			ClientRequestToken: aws.String(p.Token), SecretString: aws.String(p.Content.Reveal()), VersionStages: []string{stagePending}})
		if err != nil {
			return fail("put a pending version into", s, err)
		}
	}
	got, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.Name), VersionId: aws.String(p.Token)})
	if err != nil {
		return fail("read back the pending version of", s, err)
	}
	if !secret.New(aws.ToString(got.SecretString)).Equal(p.Content) {
		return fmt.Errorf("%s, version %s: %w", s.Key(), p.Token, delivery.ErrMismatch)
	}
	return nil
}

// publishSecret moves AWSCURRENT to p's version (Secrets Manager moves AWSPREVIOUS to the version it
// leaves), then takes AWSPENDING off it.
func (d *Destination) publishSecret(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	st, err := d.describe(ctx, s)
	if err != nil {
		return err
	}
	labels, ok := st.versions[p.Token]
	if !ok {
		return fmt.Errorf("publish %s: version %s was not staged", s.Key(), p.Token)
	}
	c := d.sm(s.Region)
	if cur := st.labelled(stageCurrent); cur != p.Token {
		in := &secretsmanager.UpdateSecretVersionStageInput{SecretId: aws.String(s.Name), VersionStage: aws.String(stageCurrent),
			MoveToVersionId: aws.String(p.Token)}
		if cur != "" {
			in.RemoveFromVersionId = aws.String(cur)
		}
		if _, err := c.UpdateSecretVersionStage(ctx, in); err != nil {
			return fail("move AWSCURRENT of", s, err)
		}
	}
	if slices.Contains(labels, stagePending) {
		return d.unlabel(ctx, s, stagePending, p.Token)
	}
	return nil
}

func (d *Destination) unlabel(ctx context.Context, s delivery.Spec, label, version string) error {
	_, err := d.sm(s.Region).UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{SecretId: aws.String(s.Name),
		VersionStage: aws.String(label), RemoveFromVersionId: aws.String(version)})
	if err != nil {
		return fail("take "+label+" off a version of", s, err)
	}
	return nil
}

// withdrawSecret moves AWSCURRENT back from p's version: to the version labelled AWSPREVIOUS, or —
// when the secret had no value before p — to old, put as a version of its own. p's version then
// keeps no label.
func (d *Destination) withdrawSecret(ctx context.Context, s delivery.Spec, p delivery.Payload, old *delivery.Payload) error {
	st, err := d.describe(ctx, s)
	if err != nil || !st.exists {
		return err
	}
	if _, ok := st.versions[p.Token]; !ok {
		return nil
	}
	c := d.sm(s.Region)
	if st.labelled(stageCurrent) == p.Token {
		back := st.labelled(stagePrevious)
		if back == "" || back == p.Token {
			if old == nil {
				return nil // created by the rotation being rolled back: nothing to go back to
			}
			if err := d.stageSecret(ctx, s, *old); err != nil {
				return err
			}
			back = old.Token
		}
		_, err := c.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{SecretId: aws.String(s.Name),
			VersionStage: aws.String(stageCurrent), MoveToVersionId: aws.String(back), RemoveFromVersionId: aws.String(p.Token)})
		if err != nil {
			return fail("move AWSCURRENT back on", s, err)
		}
		if st, err = d.describe(ctx, s); err != nil {
			return err
		}
	}
	for _, label := range st.versions[p.Token] {
		if err := d.unlabel(ctx, s, label, p.Token); err != nil {
			return err
		}
	}
	if old != nil && slices.Contains(st.versions[old.Token], stagePending) {
		return d.unlabel(ctx, s, stagePending, old.Token)
	}
	return nil
}

// currentSecret reads the value labelled AWSCURRENT (asked for by label: see the package tests on
// moto's default version).
func (d *Destination) currentSecret(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	out, err := d.sm(s.Region).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.Name), VersionStage: aws.String(stageCurrent)})
	if code := errorCode(err); code == "ResourceNotFoundException" {
		return delivery.Held{}, nil
	} else if err != nil {
		return delivery.Held{}, fail("read", s, err)
	}
	content := secret.New(aws.ToString(out.SecretString))
	id, err := delivery.KeyID(content)
	if err != nil {
		return delivery.Held{}, fmt.Errorf("%s: %w", s.Key(), err)
	}
	return delivery.Held{KeyID: id, Content: content}, nil
}

// forgetSecret takes AWSPREVIOUS off the version that holds keyID.
func (d *Destination) forgetSecret(ctx context.Context, s delivery.Spec, keyID string) error {
	st, err := d.describe(ctx, s)
	if err != nil || !st.exists {
		return err
	}
	prev := st.labelled(stagePrevious)
	if prev == "" {
		return nil
	}
	out, err := d.sm(s.Region).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.Name), VersionId: aws.String(prev)})
	if err != nil {
		return fail("read the previous version of", s, err)
	}
	if id, _ := delivery.KeyID(secret.New(aws.ToString(out.SecretString))); id != keyID {
		return nil
	}
	return d.unlabel(ctx, s, stagePrevious, prev)
}
