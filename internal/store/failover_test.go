package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/testenv"
)

// TestFailoverToAStandby: a DSN naming a primary and its streaming standby, with
// target_session_attrs=read-write, as a managed PostgreSQL's failover leaves it. The primary stops;
// while nothing accepts writes, a write fails at once as unavailable (a 503 upstream); once the
// standby is promoted, the same open store writes to it, and what was written before is there.
func TestFailoverToAStandby(t *testing.T) {
	ctx := context.Background()
	primary := testenv.NewPGServer(t)
	standby := primary.Standby()
	dsn := fmt.Sprintf("postgres://keyward@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		primary.Port, standby.Port)
	db, err := Open(ctx, Postgres, dsn, WithStatementTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	beat := func(id string) error {
		return db.Cluster().Heartbeat(ctx, cluster.Replica{ID: id, StartedAt: now, SeenAt: time.Now()}, now.Add(-time.Hour))
	}
	if err := beat("before"); err != nil {
		t.Fatal(err)
	}
	primary.Stop()
	start := time.Now()
	if err := beat("between"); !Unavailable(err) {
		t.Fatalf("a write with no primary: %v, want the database unavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the failed write took %s", took)
	}
	standby.Promote()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if last = beat("after"); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("no write reached the promoted standby: %v", last)
	}
	rs, err := db.Cluster().Replicas(ctx)
	if err != nil || len(rs) != 2 || rs[0].ID != "after" || rs[1].ID != "before" {
		t.Fatalf("after the failover: %+v %v", rs, err)
	}
}
