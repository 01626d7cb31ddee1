package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
)

// ActionAccessDenied is the audit action of a request an authenticated principal was refused (403).
const ActionAccessDenied = "access.denied"

// deniedRate and deniedBurst bound the refusals recorded per principal: a client looping on a
// refused route cannot flood the trail. What is dropped is counted, and the next record that is
// written says how many were.
const (
	deniedRate  = rate.Limit(1) // per second, after the burst
	deniedBurst = 10
)

// denials records refusals in the audit trail, a bounded number per principal; the principals it
// tracks are a bounded LRU (maxTracked).
type denials struct {
	trail *audit.Trail
	mu    sync.Mutex
	by    *lru.Cache[string, *denialCount]
}

type denialCount struct {
	l       *rate.Limiter
	dropped int64
}

// record writes an access.denied record of p's request to r (reason: forbidden, mfa_required,
// network), unless p has had its share of them lately: then it is counted as dropped.
func (d *denials) record(r *http.Request, p *auth.Principal, route, reason string) {
	if d == nil || d.trail == nil || p == nil {
		return
	}
	now := time.Now()
	d.mu.Lock()
	if d.by == nil {
		d.by, _ = lru.New[string, *denialCount](maxTracked)
	}
	c, ok := d.by.Get(p.ID())
	if !ok {
		c = &denialCount{l: rate.NewLimiter(deniedRate, deniedBurst)}
		d.by.Add(p.ID(), c)
	}
	if !c.l.AllowN(now, 1) {
		c.dropped++
		d.mu.Unlock()
		return
	}
	dropped := c.dropped
	c.dropped = 0
	d.mu.Unlock()
	detail := map[string]string{"route": route, "reason": reason}
	if team := r.PathValue("team"); team != "" {
		detail["team"] = team
	}
	if dropped > 0 {
		detail["dropped_before"] = strconv.FormatInt(dropped, 10)
	}
	target := route
	if t := detail["team"]; t != "" {
		target = "team:" + t
	}
	// The refusal stands whether or not it could be recorded; a failure to record is the trail's to
	// report (its store logs), not the caller's.
	_ = d.trail.Record(context.WithoutCancel(r.Context()), audit.Event{Actor: p.ID(), Action: ActionAccessDenied, Target: target,
		Outcome: audit.Denied, Detail: detail})
}
