package store

import (
	"context"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
)

// auditBenchRecords is the trail's length in BenchmarkAuditFind.
const auditBenchRecords = 1_000_000

// fillAuditTrail writes n records straight into audit_events, in one statement (their hashes are
// not a chain: Find does not look at them). Record x is by "user:u<x%1000>", of one of six actions,
// about "aws:1:user-<x%5000>", one second after the one before.
func fillAuditTrail(b *testing.B, db *DB, n int, start time.Time) {
	b.Helper()
	series := `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $1) SELECT x FROM c`
	if db.driver == Postgres {
		series = `SELECT x FROM generate_series(1, $1::bigint) AS c(x)`
	}
	_, err := db.sql.ExecContext(context.Background(), `INSERT INTO audit_events (`+auditColumns+`)
		SELECT x, $2 + x * 1000000, 'user:u' || (x % 1000),
			CASE x % 6 WHEN 0 THEN 'key.rotated' WHEN 1 THEN 'key.read' WHEN 2 THEN 'auth.login'
				WHEN 3 THEN 'auth.logout' WHEN 4 THEN 'access.denied' ELSE 'rotation.started' END,
			'aws:1:user-' || (x % 5000), 'success', '', '', '', '', 'h' || x
		FROM (`+series+`) AS s`, n, micros(start))
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Optimize(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAuditFind reads one page (100 records) of a trail of a million through GET /v1/audit's
// filters, on both drivers: the target is 50 ms a page (issue 16). ns/op is one page.
func BenchmarkAuditFind(b *testing.B) {
	forEachBenchDatabase(b, func(b *testing.B, db *DB) {
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		fillAuditTrail(b, db, auditBenchRecords, start)
		trail := audit.New(db.Audit(), nil, nil)
		for _, c := range []struct {
			name string
			f    audit.Filter
			min  int // records the page must hold
		}{
			{"none, from the middle", audit.Filter{After: auditBenchRecords / 2}, 100},
			{"actor", audit.Filter{Actor: "user:u417"}, 100},
			{"actor, late page", audit.Filter{Actor: "user:u417", After: 900_000}, 100},
			{"action prefix", audit.Filter{Action: "auth.", After: 700_000}, 100},
			{"target", audit.Filter{Target: "aws:1:user-4242"}, 100},
			{"one hour", audit.Filter{Since: start.Add(200 * time.Hour), Until: start.Add(201 * time.Hour)}, 100},
			{"actor and action in a day", audit.Filter{Actor: "user:u7", Action: "key.", Since: start.Add(240 * time.Hour),
				Until: start.Add(264 * time.Hour)}, 20},
			{"nothing matches", audit.Filter{Actor: "user:nobody"}, 0},
		} {
			b.Run(c.name, func(b *testing.B) {
				c.f.Limit = 100
				for b.Loop() {
					recs, _, err := trail.Find(context.Background(), c.f)
					if err != nil {
						b.Fatal(err)
					}
					if len(recs) < c.min {
						b.Fatalf("%d records, want at least %d", len(recs), c.min)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
			})
		}
	})
}
