// Package prometheus holds Keyward's Prometheus alerts. It is a module of its own so that the
// Prometheus rule parser's dependencies stay out of Keyward's: scripts/test.sh runs its test.
package prometheus

import (
	"log/slog"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// TestAlertsParse: alerts.yaml is a rule file Prometheus accepts — its YAML, its groups, every
// rule's PromQL expression and its annotation templates — and holds the five alerts the CloudWatch
// alarms mirror.
func TestAlertsParse(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yaml", false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	want := map[string]bool{"KeywardRotationFailed": true, "KeywardRotationBlocked": true, "KeywardKeyOverdue": true,
		"KeywardNotificationsStuck": true, "KeywardSilent": true}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			delete(want, r.Alert)
		}
	}
	if len(want) > 0 {
		t.Fatalf("alerts missing: %v", want)
	}
}
