// Package cloudwatch sends the audit trail to Amazon CloudWatch Logs, one log event per record.
package cloudwatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"

	"github.com/keyward/keyward/internal/audit"
)

// PutLogEvents limits: events and bytes per call (each event counts 26 bytes beyond its message),
// and the time one call may span.
const (
	maxEvents    = 10000
	maxBytes     = 1 << 20
	eventAdds    = 26
	maxBatchSpan = 24 * time.Hour
)

// Sink is an audit.Sink writing to one log stream of one log group, both created when missing.
type Sink struct {
	client *cloudwatchlogs.Client
	group  string
	stream string
	log    *slog.Logger

	once    sync.Mutex
	created bool
}

var _ audit.Sink = (*Sink)(nil)

// New returns a sink over the AWS configuration cfg.
func New(cfg aws.Config, group, stream string, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sink{client: cloudwatchlogs.NewFromConfig(cfg), group: group, stream: stream, log: log}
}

// Name implements audit.Sink.
func (s *Sink) Name() string { return "cloudwatch:" + s.group + "/" + s.stream }

// ensure creates the log group and stream unless they exist.
func (s *Sink) ensure(ctx context.Context) error {
	s.once.Lock()
	defer s.once.Unlock()
	if s.created {
		return nil
	}
	var exists *types.ResourceAlreadyExistsException
	if _, err := s.client.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: &s.group}); err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create log group %s: %w", s.group, err)
	}
	if _, err := s.client.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: &s.group, LogStreamName: &s.stream}); err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("create log stream %s in %s: %w", s.stream, s.group, err)
	}
	s.created = true
	return nil
}

// Send implements audit.Sink: the records go in calls that keep to PutLogEvents' limits, in time
// order (records of several processes may be a little out of it).
func (s *Sink) Send(ctx context.Context, recs []audit.Record) error {
	if err := s.ensure(ctx); err != nil {
		return err
	}
	events := make([]types.InputLogEvent, 0, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		events = append(events, types.InputLogEvent{Message: aws.String(string(b)), Timestamp: aws.Int64(r.Time.UnixMilli())})
	}
	slices.SortStableFunc(events, func(a, b types.InputLogEvent) int { return cmp.Compare(*a.Timestamp, *b.Timestamp) })
	for len(events) > 0 {
		n, size := 0, 0
		for n < len(events) && n < maxEvents {
			add := len(*events[n].Message) + eventAdds
			if size+add > maxBytes || *events[n].Timestamp-*events[0].Timestamp >= maxBatchSpan.Milliseconds() {
				break
			}
			size += add
			n++
		}
		out, err := s.client.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{
			LogGroupName: &s.group, LogStreamName: &s.stream, LogEvents: events[:n]})
		if err != nil {
			return fmt.Errorf("put %d log events to %s: %w", n, s.Name(), err)
		}
		if rej := out.RejectedLogEventsInfo; rej != nil {
			// Too old or too new for CloudWatch: they can never be accepted, and stay in the database.
			s.log.Warn("CloudWatch Logs rejected audit records", "sink", s.Name(),
				"too_old_before", aws.ToInt32(rej.TooOldLogEventEndIndex), "too_new_from", aws.ToInt32(rej.TooNewLogEventStartIndex),
				"expired_before", aws.ToInt32(rej.ExpiredLogEventEndIndex))
		}
		events = events[n:]
	}
	return nil
}
