package awsmetrics_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/keyward/keyward/internal/metrics/awsmetrics"
	"github.com/keyward/keyward/internal/testenv"
)

// TestPublish puts a pass over 600 accounts (more data points than one call carries) into
// moto's CloudWatch, and reads it back as an alarm would: the counts, and per account the oldest
// key's age and the overdue keys.
func TestPublish(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "us-east-1")
	namespace := fmt.Sprintf("Keyward/test-%d", time.Now().UnixNano())
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	pass := awsmetrics.Pass{At: at, Rotated: 3, Failed: 1, Blocked: 2, Visited: 7, NotificationsPending: 5, Accounts: map[string]awsmetrics.Account{}}
	for i := range 600 {
		pass.Accounts[fmt.Sprintf("%012d", 100000000000+i)] = awsmetrics.Account{OldestKeyAge: time.Duration(i) * 24 * time.Hour, Overdue: i % 3}
	}
	if err := awsmetrics.New(cfg, namespace).Publish(ctx, pass); err != nil {
		t.Fatal(err)
	}
	cw := awsmetrics.Client(cfg)
	stat := func(name string, dims ...types.Dimension) float64 {
		t.Helper()
		out, err := cw.GetMetricStatistics(ctx, &cloudwatch.GetMetricStatisticsInput{Namespace: aws.String(namespace), MetricName: aws.String(name),
			Dimensions: dims, StartTime: aws.Time(at.Add(-time.Hour)), EndTime: aws.Time(at.Add(time.Hour)), Period: aws.Int32(3600),
			Statistics: []types.Statistic{types.StatisticMaximum}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Datapoints) != 1 {
			t.Fatalf("%s %v: %d data points, want 1", name, dims, len(out.Datapoints))
		}
		return aws.ToFloat64(out.Datapoints[0].Maximum)
	}
	for name, want := range map[string]float64{awsmetrics.MetricRotated: 3, awsmetrics.MetricFailed: 1, awsmetrics.MetricBlocked: 2,
		awsmetrics.MetricHeld: 0, awsmetrics.MetricNotificationsPending: 5, awsmetrics.MetricOverdue: 600, /* the total, for alarms */
		awsmetrics.MetricProgress: 7} {
		if got := stat(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	last := types.Dimension{Name: aws.String(awsmetrics.DimensionAccount), Value: aws.String("100000000599")}
	if got := stat(awsmetrics.MetricOldestKeyAge, last); got != 599 {
		t.Errorf("the last account's oldest key: %v days, want 599", got)
	}
	if got := stat(awsmetrics.MetricOverdue, last); got != 2 {
		t.Errorf("the last account's overdue keys: %v, want 2", got)
	}
	// Every account arrived, across the calls.
	seen := map[string]bool{}
	for pages := cloudwatch.NewListMetricsPaginator(cw, &cloudwatch.ListMetricsInput{Namespace: aws.String(namespace),
		MetricName: aws.String(awsmetrics.MetricOldestKeyAge)}); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Metrics {
			for _, d := range m.Dimensions {
				seen[aws.ToString(d.Value)] = true
			}
		}
	}
	if len(seen) != 600 {
		t.Fatalf("%d accounts in CloudWatch, want 600", len(seen))
	}
}
