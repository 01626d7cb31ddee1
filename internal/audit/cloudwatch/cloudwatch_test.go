package cloudwatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/audit/cloudwatch"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
)

func record(t *testing.T, trail *audit.Trail, n int) {
	t.Helper()
	for i := range n {
		if err := trail.Record(context.Background(), audit.Event{Actor: "engine:test", Action: "key.rotated",
			Target: fmt.Sprintf("aws:123456789012:user-%d", i), Outcome: audit.Success}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBacklogReachesCloudWatch: while CloudWatch is unreachable the trail keeps growing and the
// shipper keeps its place; once it is back, every record arrives, in order, once.
func TestBacklogReachesCloudWatch(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "k.db")})
	trail := audit.New(db.Audit(), nil, nil)
	cfg := testenv.MotoAWSConfig(t, "us-east-1")
	down := cfg.Copy()
	down.BaseEndpoint = aws.String("http://127.0.0.1:1") // nothing listens there
	down.RetryMaxAttempts = 1

	stream := fmt.Sprintf("test-%d", time.Now().UnixNano()) // moto may outlive one run of the test
	shipper := func(c aws.Config) *audit.Shipper {
		return &audit.Shipper{Store: db.Audit(), Cursors: db.Audit(), Sinks: []audit.Sink{cloudwatch.New(c, "keyward-audit", stream, nil)}}
	}
	record(t, trail, 700)
	if err := shipper(down).Ship(ctx); err == nil {
		t.Fatal("shipping to an unreachable CloudWatch succeeded")
	}
	record(t, trail, 600) // rotations go on: the trail grows while the sink is down
	if seq, err := db.Audit().Cursor(ctx, "cloudwatch:keyward-audit/"+stream); err != nil || seq != 0 {
		t.Fatalf("cursor after a failure: %d %v", seq, err)
	}
	up := shipper(cfg)
	if err := up.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	if err := up.Ship(ctx); err != nil { // nothing new: nothing sent twice
		t.Fatal(err)
	}
	logs := cloudwatchlogs.NewFromConfig(cfg)
	var seqs []int64
	var token *string
	for {
		out, err := logs.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String("keyward-audit"),
			LogStreamName: aws.String(stream), StartFromHead: aws.Bool(true), NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range out.Events {
			var r audit.Record
			if err := json.Unmarshal([]byte(*e.Message), &r); err != nil || r.Hash != r.ComputeHash() {
				t.Fatalf("log event %q is not an intact record: %v", *e.Message, err)
			}
			seqs = append(seqs, r.Seq)
		}
		if len(out.Events) == 0 || aws.ToString(out.NextForwardToken) == aws.ToString(token) {
			break
		}
		token = out.NextForwardToken
	}
	if len(seqs) != 1300 {
		t.Fatalf("%d records in CloudWatch, want 1300", len(seqs))
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("record %d arrived as the %d-th", s, i+1)
		}
	}
}
