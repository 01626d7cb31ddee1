package access

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// Kinds of credentials handed out, as the audit trail names them.
const (
	TypeKey     = "key"     // the team's long-lived access key
	TypeSession = "session" // temporary credentials made with it (STS GetSessionToken)
)

// ErrSessionOnly: the team hands out session credentials only.
var ErrSessionOnly = errors.New("session credentials only")

// DefaultSessionDuration is a session's life when the caller does not ask for one.
const DefaultSessionDuration = time.Hour

// Session durations a caller may ask for.
const (
	MinSessionDuration = 15 * time.Minute
	MaxSessionDuration = 12 * time.Hour
)

// sessionMargin: a cached session is handed out only while it has this long left to live, so that
// its holder does not get credentials about to expire.
const sessionMargin = 5 * time.Minute

// SessionCredential is a team's session: temporary credentials made with its current key.
type SessionCredential struct {
	Team string
	cloud.Session
	ParentKeyID string // the long-lived key it was made with (never handed out with it)
	parent      int64  // that key's version number
	identity    vault.Identity
}

// newerThan reports whether the session was made with a later key of c's identity than c.
func (sc SessionCredential) newerThan(c Credential) bool {
	return sc.identity == c.Identity && sc.parent > c.Number
}

// Sessions caches each team's session per duration asked for, until sessionMargin before it expires;
// many readers at once make one STS call (singleflight), and a session made with a key that is no
// longer current is never handed out.
type Sessions struct {
	mu    sync.Mutex
	cache map[string]SessionCredential // team|duration → session
	group singleflight.Group
	calls atomic.Int64
}

// Calls returns how many STS calls the cache has made.
func (c *Sessions) Calls() int64 { return c.calls.Load() }

// SessionCredentials returns a session of a team to p: made with the team's current key (its first
// one made if it has none), recorded in the audit trail before it is handed over.
func (s *Service) SessionCredentials(ctx context.Context, p *auth.Principal, teamName string, d time.Duration) (SessionCredential, error) {
	if d < MinSessionDuration || d > MaxSessionDuration {
		return SessionCredential{}, fmt.Errorf("duration %s: want %s to %s: %w", d, MinSessionDuration, MaxSessionDuration, auth.ErrInvalid)
	}
	t, err := s.team(ctx, p, auth.ReadCredentials, teamName)
	if err != nil {
		return SessionCredential{}, err
	}
	c, err := s.current(ctx, t)
	if err != nil {
		return SessionCredential{}, err
	}
	sess, err := s.session(ctx, c, d)
	if err != nil {
		return SessionCredential{}, err
	}
	if err := s.recordRead(ctx, p.ID(), c.Credential, map[string]string{"team": t.Name, "via": p.Via, "type": TypeSession,
		"session_key_id": sess.AccessKeyID, "session_expires": sess.Expiration.Format(time.RFC3339)}); err != nil {
		return SessionCredential{}, err
	}
	return sess, nil
}

// session returns the cached session of a team's current key, or makes one.
func (s *Service) session(ctx context.Context, c Credential, d time.Duration) (SessionCredential, error) {
	s.sessionsOnce.Do(func() {
		if s.Sessions == nil {
			s.Sessions = &Sessions{}
		}
	})
	cache := s.Sessions
	key := c.Team + "|" + d.String()
	fresh := func() (SessionCredential, bool) {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		got, ok := cache.cache[key]
		// A session of a newer key serves a reader that read the current key just before it changed,
		// rather than that reader making a session of the older key and evicting the newer one.
		current := got.ParentKeyID == c.AccessKeyID || got.newerThan(c)
		return got, ok && current && s.now().Add(sessionMargin).Before(got.Expiration)
	}
	if got, ok := fresh(); ok {
		return got, nil
	}
	v, err, _ := cache.group.Do(key+"|"+c.AccessKeyID, func() (any, error) {
		if got, ok := fresh(); ok { // made by the call that just finished
			return got, nil
		}
		cache.calls.Add(1)
		sess, err := s.Engine.Cloud.SessionToken(context.WithoutCancel(ctx), c.Identity.AccountID, c.AccessKeyID, c.SecretAccessKey, d)
		if err != nil {
			return nil, failure(ErrCloudUnavailable, err, "team %s: the cloud did not make session credentials; try again later "+
				"(operators find why in the log under this request's id)", c.Team)
		}
		got := SessionCredential{Team: c.Team, Session: sess, ParentKeyID: c.AccessKeyID, parent: c.Number, identity: c.Identity}
		cache.mu.Lock()
		defer cache.mu.Unlock()
		if cache.cache == nil {
			cache.cache = map[string]SessionCredential{}
		}
		for k, old := range cache.cache { // sessions of a replaced key, or expired, go
			if (old.Team == c.Team && !old.newerThan(c) && old.ParentKeyID != c.AccessKeyID) || !s.now().Before(old.Expiration) {
				delete(cache.cache, k)
			}
		}
		if newer, ok := cache.cache[key]; ok && newer.newerThan(c) {
			return newer, nil // a newer key's session was made meanwhile
		}
		cache.cache[key] = got
		return got, nil
	})
	if err != nil {
		return SessionCredential{}, err
	}
	return v.(SessionCredential), nil
}
