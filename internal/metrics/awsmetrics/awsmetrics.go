// Package awsmetrics sends what a rotation pass found to Amazon CloudWatch, as the seeds' Lambda
// does: once a pass, the rotation counts, and per account the oldest current key's age and how many
// keys are overdue, so that CloudWatch alarms can watch Keyward where the rest of AWS is watched.
// No dimension carries a user name or an access key id: only the account.
package awsmetrics

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/schemas"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/smithy-go/transport/http/protocol/awsquery"
)

// Metric names, as the Terraform and CloudFormation alarms name them.
const (
	MetricRotated              = "RotationsSucceeded"
	MetricFailed               = "RotationsFailed"
	MetricBlocked              = "RotationsBlocked"
	MetricHeld                 = "RotationsHeld"
	MetricOldestKeyAge         = "OldestAccessKeyAgeDays"
	MetricOverdue              = "OverdueAccessKeys"
	MetricNotificationsPending = "NotificationsPending"
	// MetricProgress is the scheduler's heartbeat: users visited, put at each pass's end and every
	// minute while a pass runs. The keyward-silent alarm watches its sample count: a long pass keeps
	// it coming; a scheduler that stopped does not.
	MetricProgress   = "SchedulerProgress"
	DimensionAccount = "AccountId"
)

// Account is what a pass saw of one account's current keys.
type Account struct {
	OldestKeyAge time.Duration // of its oldest current key
	Overdue      int           // current keys older than the policy allows
}

// Pass is what one rotation pass reports.
type Pass struct {
	At                             time.Time
	Rotated, Failed, Blocked, Held int
	Visited                        int                // users the pass visited
	Accounts                       map[string]Account // by account id
	NotificationsPending           int
}

// maxDatums is how many data points one PutMetricData call carries at most.
const maxDatums = 1000

// Publisher puts a pass's metrics into one CloudWatch namespace.
type Publisher struct {
	client    *cloudwatch.Client
	namespace string
}

// New returns a publisher to namespace (metrics.cloudwatch.namespace). It speaks CloudWatch's
// awsQuery protocol, which CloudWatch still serves, rather than the SDK's default CBOR: moto, which
// the tests run against, answers awsQuery only, and production uses the protocol the tests prove.
func New(cfg aws.Config, namespace string) *Publisher {
	return &Publisher{client: Client(cfg), namespace: namespace}
}

// Client is a CloudWatch client that speaks awsQuery.
func Client(cfg aws.Config) *cloudwatch.Client {
	return cloudwatch.NewFromConfig(cfg, func(o *cloudwatch.Options) { o.Protocol = awsquery.New(schemas.GraniteServiceVersion20100801) })
}

// Heartbeat puts the scheduler's progress while a pass runs: visited users since the last beat.
func (p *Publisher) Heartbeat(ctx context.Context, at time.Time, visited int) error {
	_, err := p.client.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String(p.namespace), MetricData: []types.MetricDatum{{
		MetricName: aws.String(MetricProgress), Value: aws.Float64(float64(visited)), Unit: types.StandardUnitCount, Timestamp: aws.Time(at.UTC())}}})
	if err != nil {
		return fmt.Errorf("cloudwatch PutMetricData to namespace %s: %w", p.namespace, err)
	}
	return nil
}

// Publish sends one pass's metrics, in as few calls as CloudWatch allows.
func (p *Publisher) Publish(ctx context.Context, pass Pass) error {
	at := aws.Time(pass.At.UTC())
	count := func(name string, v int, dims ...types.Dimension) types.MetricDatum {
		return types.MetricDatum{MetricName: aws.String(name), Value: aws.Float64(float64(v)), Unit: types.StandardUnitCount,
			Timestamp: at, Dimensions: dims}
	}
	data := []types.MetricDatum{
		count(MetricRotated, pass.Rotated), count(MetricFailed, pass.Failed), count(MetricBlocked, pass.Blocked),
		count(MetricHeld, pass.Held), count(MetricNotificationsPending, pass.NotificationsPending), count(MetricProgress, pass.Visited),
	}
	accounts := make([]string, 0, len(pass.Accounts))
	overdue := 0
	for id, a := range pass.Accounts {
		accounts = append(accounts, id)
		overdue += a.Overdue
	}
	// The total without a dimension too: what an alarm watches (alarms cannot sum over a dimension).
	data = append(data, count(MetricOverdue, overdue))
	sort.Strings(accounts)
	for _, id := range accounts {
		a := pass.Accounts[id]
		dim := types.Dimension{Name: aws.String(DimensionAccount), Value: aws.String(id)}
		data = append(data, types.MetricDatum{MetricName: aws.String(MetricOldestKeyAge), Value: aws.Float64(a.OldestKeyAge.Hours() / 24),
			Unit: types.StandardUnitNone, Timestamp: at, Dimensions: []types.Dimension{dim}}, count(MetricOverdue, a.Overdue, dim))
	}
	for len(data) > 0 {
		n := min(len(data), maxDatums)
		if _, err := p.client.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String(p.namespace), MetricData: data[:n]}); err != nil {
			return fmt.Errorf("cloudwatch PutMetricData to namespace %s: %w", p.namespace, err)
		}
		data = data[n:]
	}
	return nil
}
