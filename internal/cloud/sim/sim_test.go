package sim_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/secret"
)

const acct = "123456789012"

func TestKeyRules(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := sim.New(sim.WithClock(func() time.Time { return now }), sim.WithKeyDelay(10*time.Second))
	c.AddUser(acct, "alice", "/ci/", map[string]string{"team": "a"}, "developers")

	k1, err := c.CreateAccessKey(ctx, acct, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(k1.ID) != 20 || len(k1.Secret.Reveal()) != 40 {
		t.Fatalf("key %s with a %d-character secret", k1.ID, len(k1.Secret.Reveal()))
	}
	if _, err := c.Verify(ctx, acct, k1.ID, k1.Secret); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("a brand-new key verified before the delay: %v", err)
	}
	now = now.Add(10 * time.Second)
	arn, err := c.Verify(ctx, acct, k1.ID, k1.Secret)
	if err != nil || arn != "arn:aws:iam::123456789012:user/ci/alice" {
		t.Fatalf("Verify = %q, %v", arn, err)
	}
	if _, err := c.Verify(ctx, acct, k1.ID, secret.New("wrong")); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("wrong secret: %v", err)
	}
	if lu, err := c.AccessKeyLastUsed(ctx, acct, k1.ID); err != nil || !lu.At.Equal(now) {
		t.Fatalf("verification not recorded as a use: %+v %v", lu, err)
	}

	k2, err := c.CreateAccessKey(ctx, acct, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetAccessKeyStatus(ctx, acct, "alice", k1.ID, cloud.KeyInactive); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAccessKey(ctx, acct, "alice"); !errors.Is(err, cloud.ErrLimitExceeded) {
		t.Fatalf("third key (an inactive one counts): %v", err)
	}
	if _, err := c.Verify(ctx, acct, k1.ID, k1.Secret); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("an inactive key verified: %v", err)
	}
	if err := c.DeleteAccessKey(ctx, acct, "alice", k1.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteAccessKey(ctx, acct, "alice", k1.ID); !errors.Is(err, cloud.ErrNoSuchEntity) {
		t.Fatalf("deleting twice: %v", err)
	}
	keys, err := c.ListAccessKeys(ctx, acct, "alice")
	if err != nil || len(keys) != 1 || keys[0].ID != k2.ID {
		t.Fatalf("keys after delete: %v %v", keys, err)
	}
	for _, err := range []error{
		func() error { _, err := c.ListAccessKeys(ctx, acct, "bob"); return err }(),
		func() error { _, err := c.CreateAccessKey(ctx, "999999999999", "alice"); return err }(),
		c.DeleteAccessKey(ctx, acct, "alice", "AKIAAAAAAAAAAAAAAAAA"),
		c.SetAccessKeyStatus(ctx, acct, "alice", "AKIAAAAAAAAAAAAAAAAA", cloud.KeyInactive),
	} {
		if !errors.Is(err, cloud.ErrNoSuchEntity) {
			t.Errorf("want ErrNoSuchEntity, got %v", err)
		}
	}
	if g, err := c.UserGroups(ctx, acct, "alice"); err != nil || len(g) != 1 || g[0] != "developers" {
		t.Fatalf("groups: %v %v", g, err)
	}
}

// TestPaging lists 1,500 users: every one exactly once, in pages of IAM's size.
func TestPaging(t *testing.T) {
	c := sim.New()
	const n = 1500
	for i := range n {
		c.AddUser(acct, fmt.Sprintf("user-%04d", i), "", nil)
	}
	seen := map[string]bool{}
	err := c.ListUsers(context.Background(), acct, func(u cloud.User) error {
		if seen[u.Name] {
			return fmt.Errorf("%s listed twice", u.Name)
		}
		seen[u.Name] = true
		return nil
	})
	if err != nil || len(seen) != n {
		t.Fatalf("listed %d of %d users: %v", len(seen), n, err)
	}
	if c.Pages() != n/sim.PageSize {
		t.Fatalf("%d pages, want %d", c.Pages(), n/sim.PageSize)
	}
	stop := errors.New("stop")
	count := 0
	if err := c.ListUsers(context.Background(), acct, func(cloud.User) error { count++; return stop }); !errors.Is(err, stop) || count != 1 {
		t.Fatalf("an error from fn must stop the listing: %v after %d", err, count)
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	c := sim.New(sim.WithFault(func(op, _, user string) error {
		if op == "CreateAccessKey" && user == "flaky" {
			return cloud.ErrThrottled
		}
		return nil
	}))
	c.AddUser(acct, "flaky", "", nil)
	c.AddUser(acct, "fine", "", nil)
	if _, err := c.CreateAccessKey(ctx, acct, "flaky"); !errors.Is(err, cloud.ErrThrottled) {
		t.Fatalf("injected throttling: %v", err)
	}
	if _, err := c.CreateAccessKey(ctx, acct, "fine"); err != nil {
		t.Fatal(err)
	}
	if c.Calls()["CreateAccessKey"] != 2 {
		t.Fatalf("calls: %v", c.Calls())
	}
	if keys := c.Keys(acct, "flaky"); len(keys) != 0 {
		t.Fatal("a failed create left a key")
	}
}

// Sessions act as the key's user until they expire, whatever becomes of the key meanwhile.
func TestSessions(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := sim.New(sim.WithClock(func() time.Time { return now }))
	c.AddUser(acct, "alice", "/", nil)
	k := c.AddKey(acct, "alice", now.Add(-time.Hour), cloud.KeyActive)
	if _, err := c.SessionToken(ctx, acct, k.ID, secret.New("wrong"), time.Hour); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("a session with a wrong secret: %v", err)
	}
	if _, err := c.SessionToken(ctx, acct, k.ID, k.Secret, time.Minute); err == nil {
		t.Fatal("a one-minute session")
	}
	s, err := c.SessionToken(ctx, acct, k.ID, k.Secret, time.Hour)
	if err != nil || s.Expiration != now.Add(time.Hour) {
		t.Fatalf("session: %+v %v", s, err)
	}
	if arn, err := c.CallerIdentity(s.AccessKeyID, s.SecretAccessKey, s.SessionToken); err != nil || arn != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("session identity: %q %v", arn, err)
	}
	if err := c.DeleteAccessKey(ctx, acct, "alice", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CallerIdentity(s.AccessKeyID, s.SecretAccessKey, s.SessionToken); err != nil {
		t.Fatalf("a session ended with its key: %v", err)
	}
	now = now.Add(time.Hour)
	if _, err := c.CallerIdentity(s.AccessKeyID, s.SecretAccessKey, s.SessionToken); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("an expired session: %v", err)
	}
	if _, err := c.SessionToken(ctx, acct, k.ID, k.Secret, time.Hour); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("a session of a deleted key: %v", err)
	}
}
