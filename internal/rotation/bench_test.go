package rotation_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/awsiam"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
)

// benchEngine returns an engine over a fresh embedded vault and the given cloud, without pauses.
func benchEngine(b *testing.B, c cloud.Provider, d testenv.Database) *rotation.Engine {
	b.Helper()
	db := storetest.Open(b, d)
	v := storetest.Vault(b, db, nil)
	return rotation.New(rotation.Engine{Cloud: c, Vault: v, Store: db.Rotations(), Policy: rotation.DefaultPolicy(),
		Audit: audit.New(db.Audit(), nil, nil),
		Owner: "bench", VerifyInterval: time.Millisecond,
		Sleep: func(context.Context, time.Duration) error { return nil }})
}

// BenchmarkPassSim is one pass over N users whose keys are all due, on the simulated cloud (in
// memory, so nearly all the time is the engine's: planning, sealing, and its durable writes).
func BenchmarkPassSim(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, driver := range []string{"sqlite", "postgres"} {
			b.Run(fmt.Sprintf("users=%d/%s", n, driver), func(b *testing.B) {
				var elapsed, cpu time.Duration
				var allocated uint64
				var heap uint64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					c := sim.New()
					now := time.Now()
					for u := range n {
						name := fmt.Sprintf("user-%05d", u)
						c.AddUser(acct, name, "/", nil)
						c.AddKey(acct, name, now.Add(-100*day), cloud.KeyActive)
					}
					d := testenv.Database{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "bench.db")}
					if driver == "postgres" {
						d = testenv.Database{Driver: "postgres", DSN: testenv.PostgresDSN(b)}
					}
					e := benchEngine(b, c, d)
					runtime.GC()
					var before, after runtime.MemStats
					runtime.ReadMemStats(&before)
					cpu0 := processCPU(b)
					b.StartTimer()
					start := time.Now()
					rep, err := e.Pass(context.Background(), rotation.PassOptions{Concurrency: benchWorkers})
					elapsed += time.Since(start)
					b.StopTimer()
					cpu += processCPU(b) - cpu0
					runtime.ReadMemStats(&after)
					allocated += after.TotalAlloc - before.TotalAlloc
					heap = max(heap, after.HeapInuse)
					if err != nil || rep.Summary.Rotated != n {
						b.Fatalf("pass: %+v, %v", rep.Summary, err)
					}
				}
				keys := float64(b.N * n)
				b.ReportMetric(float64(elapsed.Nanoseconds())/keys, "ns/key")
				// Keyward's own CPU (user + system) per key: with SQLite the database's work is in it,
				// with PostgreSQL it is the server's, on the same two cores here, and not in it.
				b.ReportMetric(float64(cpu.Nanoseconds())/keys, "cpu-ns/key")
				b.ReportMetric(float64(allocated)/keys, "B/key")
				b.ReportMetric(float64(heap)/(1<<20), "MiB-heap")
			})
		}
	}
}

// countingTransport counts the HTTP requests the AWS SDK sends.
type countingTransport struct {
	next  http.RoundTripper
	calls atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.next.RoundTrip(r)
}

// BenchmarkPassMoto is one pass over 200 due users against moto_server (signatures enforced). It
// reports the AWS calls per rotation, moto's own time per call (measured alone, sequentially), and
// the pass's time against calls × that time.
func BenchmarkPassMoto(b *testing.B) {
	const users = 200
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cfg := testenv.MotoWithAdmin(b, 0, nil)
		ctx := context.Background()
		admin := iam.NewFromConfig(cfg)
		for u := range users {
			name := fmt.Sprintf("svc-%03d", u)
			if _, err := admin.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
				b.Fatal(err)
			}
			if _, err := admin.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)}); err != nil {
				b.Fatal(err)
			}
		}
		counter := &countingTransport{next: http.DefaultTransport.(*http.Transport).Clone()}
		cfg.HTTPClient = &http.Client{Transport: counter}

		// moto's own time per call, alone: a cheap signed call, sequentially.
		const probes = 200
		start := time.Now()
		stsClient := sts.NewFromConfig(cfg)
		for range probes {
			if _, err := stsClient.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
				b.Fatal(err)
			}
		}
		perCall := time.Since(start) / probes
		counter.calls.Store(0)

		e := benchEngine(b, awsiam.New(cfg, awsiam.Options{MaxRPS: 10000}), testenv.Database{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "bench.db")})
		e.Policy.RotateAfter = time.Nanosecond
		e.Policy.ExemptGroup = ""
		b.StartTimer()
		start = time.Now()
		rep, err := e.Pass(ctx, rotation.PassOptions{Concurrency: benchWorkers})
		elapsed := time.Since(start)
		b.StopTimer()
		if err != nil || rep.Summary.Rotated != users {
			b.Fatalf("pass: %+v, %v", rep.Summary, err)
		}
		calls := counter.calls.Load()
		b.ReportMetric(float64(calls)/users, "calls/rotation")
		b.ReportMetric(float64(perCall.Microseconds())/1000, "ms/moto-call")
		b.ReportMetric(elapsed.Seconds(), "s/pass")
		b.ReportMetric(elapsed.Seconds()/(float64(calls)*perCall.Seconds()), "pass/(calls×call)")
	}
}

// benchWorkers is the pass's concurrency: the default (rotation.concurrency), or KEYWARD_BENCH_WORKERS.
var benchWorkers = func() int {
	if n, err := strconv.Atoi(os.Getenv("KEYWARD_BENCH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return config.Default().Rotation.Concurrency
}()

// processCPU is the CPU time (user and system) this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
