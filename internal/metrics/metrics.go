// Package metrics defines Keyward's Prometheus metrics, served at /metrics. Domain packages do not
// import it: they report through small callbacks that cmd/keyward wires to these.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Metrics holds every metric and the registry that serves them.
type Metrics struct {
	registry *prometheus.Registry

	Rotations        *prometheus.CounterVec // outcome
	RotationDuration prometheus.Histogram
	CloudCalls       *prometheus.CounterVec // operation, outcome
	HTTPRequests     *prometheus.CounterVec // method, route, code
	HTTPDuration     *prometheus.HistogramVec
	Notifications    *prometheus.CounterVec // channel, outcome
	LastPass         prometheus.Gauge
	LastPassDuration prometheus.Gauge
	PassUsers        *prometheus.GaugeVec // outcome
	// The scheduler's heartbeat, set by the replica that leads it: a pass's start, each user it
	// visits and its end move SchedulerProgress, so that a long pass is seen to make progress.
	SchedulerProgress prometheus.Gauge
	PassInProgress    prometheus.Gauge
	PassDone          prometheus.Gauge
	PassKnown         prometheus.Gauge
}

// KeyAge is the age of an identity's access key in one vault state. No label carries an access key
// id: metrics are read by more people than keys are, and an id is half of a credential.
type KeyAge struct {
	Account, User, State string
	Age                  time.Duration
}

// Sources are read at each scrape.
type Sources struct {
	// KeyAges lists the keys Keyward accounts for (not destroyed), with their age.
	KeyAges func(ctx context.Context) ([]KeyAge, error)
	// Throttles is how many cloud requests were throttled so far (nil: the cloud does not say).
	Throttles func() float64
	// OutboxPending is how many notifications wait to be delivered (nil: none are configured).
	OutboxPending func(ctx context.Context) (float64, error)
}

// New returns the metrics, registered with the Go and process collectors.
func New(src Sources) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_rotations_total",
			Help: "Rotations finished, by outcome (rotated, failed)."}, []string{"outcome"}),
		RotationDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keyward_rotation_duration_seconds",
			Help: "Time of one rotation, from its start to the new key's promotion or the rollback.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		CloudCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_cloud_api_calls_total",
			Help: "Calls to the cloud's APIs, by operation and outcome (ok, not_found, throttled, refused, error)."}, []string{"operation", "outcome"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_http_requests_total",
			Help: "HTTP requests served, by method, route and status code."}, []string{"method", "route", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyward_http_request_duration_seconds",
			Help: "Time to serve an HTTP request, by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyward_notifications_total",
			Help: "Notification deliveries, by channel and outcome (sent, failed)."}, []string{"channel", "outcome"}),
		LastPass: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_last_pass_timestamp_seconds",
			Help: "When the last rotation pass finished (Unix time)."}),
		LastPassDuration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_last_pass_duration_seconds",
			Help: "How long the last rotation pass took."}),
		PassUsers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyward_last_pass_users",
			Help: "Users of the last rotation pass, by outcome (rotated, failed, blocked, held…)."}, []string{"outcome"}),
		SchedulerProgress: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_scheduler_progress_timestamp_seconds",
			Help: "When the rotation scheduler last made progress: a pass started, a user visited, a pass finished (Unix time; on the replica that leads)."}),
		PassInProgress: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_pass_in_progress",
			Help: "1 while this replica runs a rotation pass."}),
		PassDone: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_pass_users_done",
			Help: "Users the pass under way has visited."}),
		PassKnown: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyward_pass_users_known",
			Help: "Users the pass under way has found so far (its listing goes on while it visits)."}),
	}
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Rotations, m.RotationDuration, m.CloudCalls, m.HTTPRequests, m.HTTPDuration, m.Notifications, m.LastPass,
		m.LastPassDuration, m.PassUsers, m.SchedulerProgress, m.PassInProgress, m.PassDone, m.PassKnown)
	throttles := src.Throttles
	if throttles == nil {
		throttles = func() float64 { return 0 }
	}
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "keyward_cloud_throttles_total",
		Help: "Cloud requests throttled (and retried with backoff)."}, throttles))
	m.registry.MustRegister(&scraped{src: src})
	return m
}

// Handler serves the metrics in Prometheus's format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Rotation counts a finished rotation.
func (m *Metrics) Rotation(outcome string, took time.Duration) {
	m.Rotations.WithLabelValues(outcome).Inc()
	m.RotationDuration.Observe(took.Seconds())
}

// Gather returns the metrics as a scrape would read them.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) { return m.registry.Gather() }

// PassStarted records the start of a pass.
func (m *Metrics) PassStarted(at time.Time) {
	m.SchedulerProgress.Set(unix(at))
	m.PassInProgress.Set(1)
	m.PassDone.Set(0)
	m.PassKnown.Set(0)
}

// PassProgress records that the pass under way has visited done of the known users.
func (m *Metrics) PassProgress(at time.Time, done, known int) {
	m.SchedulerProgress.Set(unix(at))
	m.PassDone.Set(float64(done))
	m.PassKnown.Set(float64(known))
}

// PassStopped records that this replica runs no pass any more without one having finished (its
// leadership lost, or shutdown).
func (m *Metrics) PassStopped() { m.PassInProgress.Set(0) }

// Pass records a finished pass (started at started, finished at at) and its users by outcome.
func (m *Metrics) Pass(started, at time.Time, byOutcome map[string]int) {
	m.LastPass.Set(unix(at))
	m.SchedulerProgress.Set(unix(at))
	m.LastPassDuration.Set(at.Sub(started).Seconds())
	m.PassInProgress.Set(0)
	for outcome, n := range byOutcome {
		m.PassUsers.WithLabelValues(outcome).Set(float64(n))
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// CloudCall counts a cloud call.
func (m *Metrics) CloudCall(operation, outcome string) {
	m.CloudCalls.WithLabelValues(operation, outcome).Inc()
}

var (
	keyAgeDesc = prometheus.NewDesc("keyward_access_key_age_seconds",
		"Age of the access keys Keyward accounts for, by identity and vault state (the oldest of a state).",
		[]string{"account", "user", "state"}, nil)
	outboxDesc = prometheus.NewDesc("keyward_outbox_pending",
		"Notifications waiting in the outbox to be delivered.", nil, nil)
)

// scraped reads the vault and the outbox at each scrape.
type scraped struct{ src Sources }

func (s *scraped) Describe(ch chan<- *prometheus.Desc) { ch <- keyAgeDesc; ch <- outboxDesc }

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.src.KeyAges != nil {
		ages, err := s.src.KeyAges(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(keyAgeDesc, err)
		}
		// One series per identity and state: the oldest key of that state.
		type series struct{ account, user, state string }
		oldest := map[series]time.Duration{}
		var order []series
		for _, a := range ages {
			k := series{a.Account, a.User, a.State}
			if age, ok := oldest[k]; !ok {
				order = append(order, k)
				oldest[k] = a.Age
			} else if a.Age > age {
				oldest[k] = a.Age
			}
		}
		for _, k := range order {
			ch <- prometheus.MustNewConstMetric(keyAgeDesc, prometheus.GaugeValue, oldest[k].Seconds(), k.account, k.user, k.state)
		}
	}
	pending := 0.0
	if s.src.OutboxPending != nil {
		n, err := s.src.OutboxPending(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(outboxDesc, err)
			return
		}
		pending = n
	}
	ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, pending)
}
