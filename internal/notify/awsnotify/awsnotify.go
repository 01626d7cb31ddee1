// Package awsnotify delivers notifications through AWS: e-mail by SES, messages to SNS topics.
package awsnotify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ses"
	sestypes "github.com/aws/aws-sdk-go-v2/service/ses/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/smithy-go"

	"github.com/keyward/keyward/internal/notify"
)

// SES sends e-mail through Amazon SES (the sender address must be verified there).
type SES struct {
	client *ses.Client
	from   string
}

var _ notify.Channel = (*SES)(nil)

// NewSES returns the SES e-mail channel.
func NewSES(cfg aws.Config, from string) *SES {
	return &SES{client: ses.NewFromConfig(cfg), from: from}
}

// Name implements notify.Channel: SES is how e-mail leaves.
func (s *SES) Name() string { return "email" }

// Send implements notify.Channel.
func (s *SES) Send(ctx context.Context, d notify.Delivery, msg notify.Message) error {
	raw, err := notify.MIME(s.from, d.Destination, d.ID, msg)
	if err != nil {
		return &notify.PermanentError{Err: err}
	}
	_, err = s.client.SendRawEmail(ctx, &ses.SendRawEmailInput{Source: aws.String(s.from),
		Destinations: []string{d.Destination}, RawMessage: &sestypes.RawMessage{Data: raw}})
	return classify("SES send to "+d.Destination, err, "MessageRejected", "MailFromDomainNotVerifiedException", "InvalidParameterValue")
}

// SNS publishes notices, as JSON, to topics.
type SNS struct{ client *sns.Client }

var _ notify.Channel = (*SNS)(nil)

// NewSNS returns the SNS channel.
func NewSNS(cfg aws.Config) *SNS { return &SNS{client: sns.NewFromConfig(cfg)} }

// Name implements notify.Channel.
func (s *SNS) Name() string { return "sns" }

// Send implements notify.Channel: the message is the same JSON a webhook gets; its attributes say
// the event and the idempotency id, for subscription filters and deduplication.
func (s *SNS) Send(ctx context.Context, d notify.Delivery, msg notify.Message) error {
	body, err := json.Marshal(notify.WebhookBody{ID: d.ID, Notice: d.Notice, Subject: msg.Subject, Text: msg.Text})
	if err != nil {
		return &notify.PermanentError{Err: err}
	}
	subject := msg.Subject
	if len(subject) > 100 { // SNS's limit
		subject = subject[:97] + "..."
	}
	_, err = s.client.Publish(ctx, &sns.PublishInput{TopicArn: aws.String(d.Destination), Message: aws.String(string(body)),
		Subject: aws.String(strings.ToValidUTF8(subject, "?")),
		MessageAttributes: map[string]snstypes.MessageAttributeValue{
			"event":           {DataType: aws.String("String"), StringValue: aws.String(d.Notice.Event)},
			"idempotency_id":  {DataType: aws.String("String"), StringValue: aws.String(d.ID)},
			"keyward_account": {DataType: aws.String("String"), StringValue: aws.String(d.Notice.Account)},
		}})
	return classify("SNS publish to "+d.Destination, err, "NotFound", "InvalidParameter", "AuthorizationError")
}

// classify wraps an AWS error: those whose code is in permanent will not pass on a retry.
func classify(what string, err error, permanent ...string) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", what, err)
	var api smithy.APIError
	if errors.As(err, &api) && (strings.HasSuffix(api.ErrorCode(), "NotFound") || slices.Contains(permanent, api.ErrorCode())) {
		return &notify.PermanentError{Err: err}
	}
	return err
}
