package awsnotify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ses"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/notify/awsnotify"
	"github.com/keyward/keyward/internal/testenv"
)

func delivery(dest string) notify.Delivery {
	return notify.Delivery{ID: "0123456789abcdef", Channel: "x", Destination: dest, Notice: notify.Notice{ID: "key.rotated|AKIANEW",
		Event: notify.KeyRotated, Time: time.Now().UTC(), Account: "123456789012", User: "ci-deploy", NewKeyID: "AKIANEWNEWNEWNEWNEW1"}}
}

func TestSESSendsEmail(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "us-east-1")
	client := ses.NewFromConfig(cfg)
	from := fmt.Sprintf("keyward-%d@example.com", time.Now().UnixNano())
	ch := awsnotify.NewSES(cfg, from)
	if err := ch.Send(ctx, delivery("owner@example.com"), notify.Message{Subject: "s", Text: "t", HTML: "<p>h</p>"}); err == nil {
		t.Fatal("SES sent from an address it has not verified")
	}
	if _, err := client.VerifyEmailIdentity(ctx, &ses.VerifyEmailIdentityInput{EmailAddress: aws.String(from)}); err != nil {
		t.Fatal(err)
	}
	before, err := client.GetSendQuota(ctx, &ses.GetSendQuotaInput{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Send(ctx, delivery("owner@example.com"), notify.Message{Subject: "s", Text: "t", HTML: "<p>h</p>"}); err != nil {
		t.Fatal(err)
	}
	after, err := client.GetSendQuota(ctx, &ses.GetSendQuotaInput{})
	if err != nil {
		t.Fatal(err)
	}
	if after.SentLast24Hours <= before.SentLast24Hours {
		t.Fatalf("SES counted %v sent, no more than before (%v)", after.SentLast24Hours, before.SentLast24Hours)
	}
}

// TestSNSPublishes publishes to a topic that an SQS queue subscribes to, and reads the message back.
func TestSNSPublishes(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "us-east-1")
	topic, err := sns.NewFromConfig(cfg).CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(fmt.Sprintf("keyward-%d", time.Now().UnixNano()))})
	if err != nil {
		t.Fatal(err)
	}
	q := sqs.NewFromConfig(cfg)
	queue, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(fmt.Sprintf("keyward-%d", time.Now().UnixNano()))})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: queue.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sns.NewFromConfig(cfg).Subscribe(ctx, &sns.SubscribeInput{TopicArn: topic.TopicArn, Protocol: aws.String("sqs"),
		Endpoint: aws.String(attrs.Attributes["QueueArn"])}); err != nil {
		t.Fatal(err)
	}
	if err := awsnotify.NewSNS(cfg).Send(ctx, delivery(*topic.TopicArn), notify.Message{Subject: "Access key rotated", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	msgs, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: queue.QueueUrl, WaitTimeSeconds: 2})
	if err != nil || len(msgs.Messages) != 1 {
		t.Fatalf("received %d messages: %v", len(msgs.Messages), err)
	}
	// SNS wraps the message in its envelope.
	var envelope struct{ Message, Subject string }
	if err := json.Unmarshal([]byte(*msgs.Messages[0].Body), &envelope); err != nil {
		t.Fatal(err)
	}
	var body notify.WebhookBody
	if err := json.Unmarshal([]byte(envelope.Message), &body); err != nil || body.ID != "0123456789abcdef" || body.Event != notify.KeyRotated ||
		body.NewKeyID != "AKIANEWNEWNEWNEWNEW1" || !strings.Contains(envelope.Subject, "Access key rotated") {
		t.Fatalf("message %+v %+v: %v", envelope, body, err)
	}
	if err := awsnotify.NewSNS(cfg).Send(ctx, delivery("arn:aws:sns:us-east-1:123456789012:no-such-topic"), notify.Message{Subject: "s"}); err == nil {
		t.Fatal("published to a topic that does not exist")
	} else if _, ok := err.(*notify.PermanentError); !ok {
		t.Fatalf("a missing topic should not be retried: %T %v", err, err)
	}
}
