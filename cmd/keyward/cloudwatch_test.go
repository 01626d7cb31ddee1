package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/keyward/keyward/internal/metrics/awsmetrics"
)

// TestServeSendsCloudWatchMetrics: with metrics.cloudwatch.namespace set, serve's passes put their
// counts and the account's oldest key age into moto's CloudWatch (signatures checked), where an
// alarm would read them; the user's key never reaches them.
func TestServeSendsCloudWatchMetrics(t *testing.T) {
	ctx := context.Background()
	namespace := fmt.Sprintf("Keyward/e2e-%d", time.Now().UnixNano())
	w := newMotoWorld(t, "KEYWARD_CLOUD=aws", `KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}]`, "KEYWARD_ROTATION_INTERVAL=1s",
		"KEYWARD_ROTATION_ROTATE_AFTER=1s", "KEYWARD_METRICS_CLOUDWATCH_NAMESPACE="+namespace)
	keys := w.addUsers(t, "batch-app")
	p := startServe(t, w.env)
	cw := awsmetrics.Client(w.admin)
	rotated := 0.0
	for deadline := time.Now().Add(60 * time.Second); rotated == 0; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation counted in CloudWatch within 60 s:\n%s", p.logs.String())
		}
		out, err := cw.GetMetricStatistics(ctx, &cloudwatch.GetMetricStatisticsInput{Namespace: aws.String(namespace),
			MetricName: aws.String(awsmetrics.MetricRotated), StartTime: aws.Time(time.Now().Add(-time.Hour)), EndTime: aws.Time(time.Now().Add(time.Hour)),
			Period: aws.Int32(3600), Statistics: []types.Statistic{types.StatisticSum}})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range out.Datapoints {
			rotated += aws.ToFloat64(d.Sum)
		}
	}
	listed, err := cw.ListMetrics(ctx, &cloudwatch.ListMetricsInput{Namespace: aws.String(namespace), MetricName: aws.String(awsmetrics.MetricOldestKeyAge)})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.Metrics) != 1 || len(listed.Metrics[0].Dimensions) != 1 || aws.ToString(listed.Metrics[0].Dimensions[0].Value) != "123456789012" {
		t.Fatalf("oldest key age: %+v", listed.Metrics)
	}
	all, err := cw.ListMetrics(ctx, &cloudwatch.ListMetricsInput{Namespace: aws.String(namespace)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all.Metrics {
		for _, d := range m.Dimensions {
			if v := aws.ToString(d.Value); strings.Contains(v, "batch-app") || strings.HasPrefix(v, "AKIA") || v == keys["batch-app"] {
				t.Fatalf("a dimension names a user or a key: %s=%s", aws.ToString(d.Name), v)
			}
		}
	}
	if strings.Contains(p.logs.String(), "cloudwatch metrics not sent") {
		t.Fatalf("a pass's metrics were not sent:\n%s", p.logs.String())
	}
}
