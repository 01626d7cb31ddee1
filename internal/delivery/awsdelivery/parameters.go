package awsdelivery

import (
	"context"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// Labels of a parameter's versions. A label is on one version at a time: labelling another version
// moves it.
const (
	labelCurrent  = "current"
	labelPrevious = "previous"
)

// paramVersion is one version of a parameter, decrypted.
type paramVersion struct {
	number int64
	value  secret.Value
	labels []string
}

// history reads every version of a parameter (none when it is missing) and checks that Keyward may
// write to it.
func (d *Destination) history(ctx context.Context, s delivery.Spec) ([]paramVersion, error) {
	c := d.ssm(s.Region)
	var out []paramVersion
	pages := ssm.NewGetParameterHistoryPaginator(c, &ssm.GetParameterHistoryInput{Name: aws.String(s.Name), WithDecryption: aws.Bool(true)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if errorCode(err) == "ParameterNotFound" {
			return nil, nil
		} else if err != nil {
			return nil, fail("read the history of", s, err)
		}
		for _, p := range page.Parameters {
			out = append(out, paramVersion{number: p.Version, value: secret.New(aws.ToString(p.Value)), labels: p.Labels})
		}
	}
	if len(out) > 0 && !s.Adopt {
		tags, err := c.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(s.Name)})
		if err != nil {
			return nil, fail("read the tags of", s, err)
		}
		if !slices.ContainsFunc(tags.TagList, func(t ssmtypes.Tag) bool {
			return aws.ToString(t.Key) == delivery.TagManaged && aws.ToString(t.Value) == "true"
		}) {
			return nil, fmt.Errorf("%s: %w (set adopt: true to write to it)", s.Key(), delivery.ErrNotOurs)
		}
	}
	return out, nil
}

// find returns the newest version holding content, or the one holding a label (content zero).
func find(versions []paramVersion, content secret.Value, label string) *paramVersion {
	for i := len(versions) - 1; i >= 0; i-- {
		v := &versions[i]
		if (label != "" && slices.Contains(v.labels, label)) || (label == "" && v.value.Equal(content)) {
			return v
		}
	}
	return nil
}

// stageParameter writes p as the parameter's newest version, unless the newest already holds it.
// Parameter Store has no pending version: readers of the bare name see p at once (it is verified);
// readers of name:current see it once it is published.
func (d *Destination) stageParameter(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	versions, err := d.history(ctx, s)
	if err != nil {
		return err
	}
	if len(versions) > 0 && versions[len(versions)-1].value.Equal(p.Content) {
		return nil
	}
	in := &ssm.PutParameterInput{Name: aws.String(s.Name), Value: aws.String(p.Content.Reveal()), Type: ssmtypes.ParameterTypeSecureString}
	if s.KMSKeyID != "" {
		in.KeyId = aws.String(s.KMSKeyID)
	}
	if len(versions) == 0 { // tags can be given only when the parameter is created
		in.Description = aws.String("An access key kept current by Keyward")
		in.Tags = []ssmtypes.Tag{{Key: aws.String(delivery.TagManaged), Value: aws.String("true")}}
	} else {
		in.Overwrite = aws.Bool(true)
	}
	if _, err := d.ssm(s.Region).PutParameter(ctx, in); err != nil {
		return fail("put", s, err)
	}
	got, err := d.ssm(s.Region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(s.Name), WithDecryption: aws.Bool(true)})
	if err != nil {
		return fail("read back", s, err)
	}
	if !secret.New(aws.ToString(got.Parameter.Value)).Equal(p.Content) {
		return fmt.Errorf("%s: %w", s.Key(), delivery.ErrMismatch)
	}
	return nil
}

// publishParameter labels the version holding p current, after labelling the version that was
// current previous (in that order, so that a crash between the two is repaired by running again).
func (d *Destination) publishParameter(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	versions, err := d.history(ctx, s)
	if err != nil {
		return err
	}
	v := find(versions, p.Content, "")
	if v == nil {
		return fmt.Errorf("publish %s: the key was not staged", s.Key())
	}
	cur := find(versions, secret.Value{}, labelCurrent)
	if cur != nil && cur.number == v.number {
		return nil
	}
	if cur != nil {
		if err := d.label(ctx, s, cur.number, labelPrevious); err != nil {
			return err
		}
	}
	return d.label(ctx, s, v.number, labelCurrent)
}

func (d *Destination) label(ctx context.Context, s delivery.Spec, version int64, label string) error {
	_, err := d.ssm(s.Region).LabelParameterVersion(ctx, &ssm.LabelParameterVersionInput{Name: aws.String(s.Name),
		ParameterVersion: aws.Int64(version), Labels: []string{label}})
	if err != nil {
		return fail("label a version "+label+" of", s, err)
	}
	return nil
}

// withdrawParameter writes old again as the newest version, labelled current, when p is the newest
// or the current one: both kinds of reader get the old key back.
func (d *Destination) withdrawParameter(ctx context.Context, s delivery.Spec, p delivery.Payload, old *delivery.Payload) error {
	versions, err := d.history(ctx, s)
	if err != nil || len(versions) == 0 {
		return err
	}
	cur := find(versions, secret.Value{}, labelCurrent)
	newest := versions[len(versions)-1]
	if !newest.value.Equal(p.Content) && (cur == nil || !cur.value.Equal(p.Content)) {
		return nil
	}
	back := secret.Value{}
	if old != nil {
		back = old.Content
	} else {
		for i := len(versions) - 1; i >= 0 && back.IsZero(); i-- { // the value before p, if any
			if !versions[i].value.Equal(p.Content) {
				back = versions[i].value
			}
		}
		if back.IsZero() {
			return nil // created by the rotation being rolled back: nothing to go back to
		}
	}
	if !newest.value.Equal(back) {
		_, err := d.ssm(s.Region).PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(s.Name), Value: aws.String(back.Reveal()),
			Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(true)})
		if err != nil {
			return fail("put the old key back into", s, err)
		}
		if versions, err = d.history(ctx, s); err != nil {
			return err
		}
	}
	return d.label(ctx, s, versions[len(versions)-1].number, labelCurrent)
}

// currentParameter reads the version labelled current, or the newest when none is.
func (d *Destination) currentParameter(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	versions, err := d.history(ctx, s)
	if err != nil || len(versions) == 0 {
		return delivery.Held{}, err
	}
	v := find(versions, secret.Value{}, labelCurrent)
	if v == nil {
		v = &versions[len(versions)-1]
	}
	id, err := delivery.KeyID(v.value)
	if err != nil {
		return delivery.Held{}, fmt.Errorf("%s: %w", s.Key(), err)
	}
	return delivery.Held{KeyID: id, Content: v.value}, nil
}

// forgetParameter takes the label previous off the version holding keyID.
func (d *Destination) forgetParameter(ctx context.Context, s delivery.Spec, keyID string) error {
	versions, err := d.history(ctx, s)
	if err != nil {
		return err
	}
	v := find(versions, secret.Value{}, labelPrevious)
	if v == nil {
		return nil
	}
	if id, _ := delivery.KeyID(v.value); id != keyID {
		return nil
	}
	_, err = d.ssm(s.Region).UnlabelParameterVersion(ctx, &ssm.UnlabelParameterVersionInput{Name: aws.String(s.Name),
		ParameterVersion: aws.Int64(v.number), Labels: []string{labelPrevious}})
	if err != nil {
		return fail("take the label previous off", s, err)
	}
	return nil
}
