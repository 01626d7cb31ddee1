package metrics_test

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/metrics"
)

// TestAlertsUseExposedMetrics: every metric deploy/prometheus/alerts.yaml names is one Keyward
// exposes (the rule file's syntax is checked by that directory's own test, with Prometheus's parser).
func TestAlertsUseExposedMetrics(t *testing.T) {
	m := metrics.New(metrics.Sources{
		KeyAges: func(context.Context) ([]metrics.KeyAge, error) {
			return []metrics.KeyAge{{Account: "123456789012", User: "app", State: "current", Age: time.Hour}}, nil
		},
		OutboxPending: func(context.Context) (float64, error) { return 0, nil },
	})
	m.Rotation("failed", time.Second)
	m.PassStarted(time.Now())
	m.Pass(time.Now().Add(-time.Minute), time.Now(), map[string]int{"blocked": 1})
	families, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	for _, f := range families {
		exposed[f.GetName()] = true
	}
	raw, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`keyward_[a-z_]+`).FindAllString(string(raw), -1)
	if len(names) < 5 {
		t.Fatalf("only %d metric names in the alerts", len(names))
	}
	for _, n := range names {
		if !exposed[n] {
			t.Errorf("alerts.yaml uses %s, which Keyward does not expose", n)
		}
	}
}
