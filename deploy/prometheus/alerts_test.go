// Package prometheus holds Keyward's Prometheus alerts. It is a module of its own so that the
// Prometheus rule parser's dependencies stay out of Keyward's: scripts/test.sh runs its test.
package prometheus

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
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

// TestSilentFiresOnNoProgress evaluates KeywardSilent's expression with Prometheus's own engine: a
// pass that runs for five hours without finishing, its heartbeat moving, does not fire it; a
// heartbeat that stopped three hours ago does, as does a cluster where no replica ever led (every
// replica exposing 0).
func TestSilentFiresOnNoProgress(t *testing.T) {
	groups, errs := rulefmt.ParseFile("alerts.yaml", false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	expr := ""
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "KeywardSilent" {
				expr = r.Expr
			}
		}
	}
	if expr == "" {
		t.Fatal("no KeywardSilent")
	}
	// Samples every 5 minutes from time 0; a heartbeat sample's value is the time it was taken.
	script := `
load 5m
  keyward_scheduler_progress_timestamp_seconds{instance="leader"} 0+300x60
  keyward_scheduler_progress_timestamp_seconds{instance="follower"} 0x60
  keyward_last_pass_timestamp_seconds{instance="leader"} 0x60

# A five-hour pass that keeps visiting users (the last finished pass is five hours old): silent is quiet.
eval instant at 5h ` + expr + `

clear
load 5m
  keyward_scheduler_progress_timestamp_seconds{instance="stopped"} 0+300x12 3600x48

# The heartbeat stopped at 1 h: at 4 h 5 m it is over three hours old.
eval instant at 4h5m ` + expr + `
  {} 11100

# Before that, the alert is quiet.
eval instant at 3h55m ` + expr + `

clear
load 5m
  keyward_scheduler_progress_timestamp_seconds{instance="a"} 0x60
  keyward_scheduler_progress_timestamp_seconds{instance="b"} 0x60

# Nobody ever led.
eval instant at 4h ` + expr + `
  {} 14400
`
	promqltest.RunTest(t, script, promqltest.NewTestEngine(t, false, 5*time.Minute, promqltest.DefaultMaxSamplesPerQuery))
}
