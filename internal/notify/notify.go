// Package notify tells people and systems what Keyward did: a key rotated, a deactivation coming, a
// rotation that failed or is blocked. Notices are written to a durable outbox in the transaction of
// the step they tell of, one row per destination, then delivered with exponential backoff by a
// dispatcher: a crash never loses one, and each carries an idempotency id so that a receiver can
// drop the duplicate a retry may bring. A notice never holds secret material: keys go by their id.
package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/backoff"
)

// Events a notice can tell of.
const (
	KeyRotated             = "key.rotated"
	KeyDeactivationComing  = "key.deactivation_upcoming"
	KeyDeactivated         = "key.deactivated"
	KeyDeleted             = "key.deleted"
	RotationFailed         = "rotation.failed"
	RotationBlocked        = "rotation.blocked"
	RotationHeld           = "rotation.held"
	DeliveryFailed         = "delivery.failed"
	KeyLeaked              = "key.leaked"
	channelEmail           = "email"
	defaultMaxAttempts     = 20
	defaultFirstRetryDelay = 30 * time.Second
	maxRetryDelay          = time.Hour
)

// Events lists every event, for configuration checks.
var Events = []string{KeyRotated, KeyDeactivationComing, KeyDeactivated, KeyDeleted, RotationFailed, RotationBlocked, RotationHeld, DeliveryFailed, KeyLeaked}

// Notice is one thing to tell. Its ID is the same each time the same fact is noticed (the same key
// rotated, the same day's hold), so it is queued once.
type Notice struct {
	ID        string            `json:"id"`
	Event     string            `json:"event"`
	Time      time.Time         `json:"time"`
	Account   string            `json:"account"`
	User      string            `json:"user"`
	Identity  string            `json:"identity"`
	Owners    []string          `json:"-"`              // e-mail addresses of the identity's owners (its keyward:owner tag)
	Team      string            `json:"team,omitempty"` // the Keyward team that owns the identity, if any
	Detail    map[string]string `json:"detail,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	KeyID     string            `json:"access_key_id,omitempty"`
	NewKeyID  string            `json:"new_access_key_id,omitempty"`
	OldKeyID  string            `json:"old_access_key_id,omitempty"`
	Scheduled time.Time         `json:"scheduled_at,omitzero"` // when an upcoming deactivation is due
}

// Delivery is a notice on its way to one destination of one channel.
type Delivery struct {
	ID          string // the idempotency id receivers see; the same on every retry
	Channel     string
	Destination string
	Notice      Notice
	Attempts    int
	CreatedAt   time.Time
}

// Route is a destination of a channel and the events it wants (globs such as "key.*"; none: all).
type Route struct {
	Channel     string
	Destination string
	Events      []string
}

// Wants says whether the route takes an event.
func (r Route) Wants(event string) bool {
	if len(r.Events) == 0 {
		return true
	}
	return slices.ContainsFunc(r.Events, func(glob string) bool {
		ok, _ := path.Match(glob, event)
		return ok
	})
}

// Router picks a notice's destinations: the global routes (the admin's addresses, topics, webhooks,
// Slack) and the identity's owners, from the configuration (OwnerRoutes) and from its tag.
type Router struct {
	Global []Route
	Owners []OwnerRoute
	// Teams give the Keyward team that owns an identity its addresses.
	Teams []TeamRoute
	// OwnerEvents are what owners named by tag receive (none: all).
	OwnerEvents []string
}

// OwnerRoute gives the owners of the users matching UserGlob (in Account, or any) their e-mail.
type OwnerRoute struct {
	Account  string
	UserGlob string
	Emails   []string
	Events   []string
}

// TeamRoute tells a team's addresses of the events (globs; none: all) of the identity it owns.
type TeamRoute struct {
	Team   string
	Emails []string
	Events []string
}

// Routes returns the notice's destinations, each once.
func (r *Router) Routes(n Notice) []Route {
	var out []Route
	seen := map[string]bool{}
	add := func(rt Route) {
		key := rt.Channel + "|" + rt.Destination
		if rt.Wants(n.Event) && !seen[key] {
			seen[key] = true
			out = append(out, rt)
		}
	}
	for _, rt := range r.Global {
		add(rt)
	}
	for _, o := range r.Owners {
		if ok, _ := path.Match(o.UserGlob, n.User); ok && (o.Account == "" || o.Account == n.Account) {
			for _, e := range o.Emails {
				add(Route{Channel: channelEmail, Destination: e, Events: o.Events})
			}
		}
	}
	for _, t := range r.Teams {
		if n.Team != "" && t.Team == n.Team {
			for _, e := range t.Emails {
				add(Route{Channel: channelEmail, Destination: e, Events: t.Events})
			}
		}
	}
	for _, e := range n.Owners {
		add(Route{Channel: channelEmail, Destination: e, Events: r.OwnerEvents})
	}
	return out
}

// deliveryID derives a delivery's idempotency id from its notice and destination.
func deliveryID(noticeID, channel, destination string) string {
	sum := sha256.Sum256([]byte(noticeID + "\x00" + channel + "\x00" + destination))
	return hex.EncodeToString(sum[:16])
}

// Outbox keeps deliveries until they are sent.
type Outbox interface {
	// Enqueue stores deliveries in the unit of work ctx carries; one already queued is left alone.
	Enqueue(ctx context.Context, ds []Delivery, at time.Time) error
	// Claim takes up to n deliveries that are due, for owner until leaseUntil: unclaimed ones, those
	// whose claim ran out, and those claimed by takeFrom (processes known to be gone).
	Claim(ctx context.Context, owner string, now, leaseUntil time.Time, n int, takeFrom ...string) ([]Delivery, error)
	// Sent records a delivery as done.
	Sent(ctx context.Context, id string, at time.Time) error
	// Retry records a failed attempt: the delivery is due again at next, or dead when next is zero.
	Retry(ctx context.Context, id string, lastError string, next time.Time) error
	// Pending counts the deliveries not yet sent, and says since when the oldest has waited.
	Pending(ctx context.Context) (int, time.Time, error)
}

// Notifier queues notices: it is what the rotation engine calls, inside its transactions.
type Notifier struct {
	Outbox Outbox
	Router *Router
	Now    func() time.Time
	// TeamOf, when set, names the team that owns a notice's identity ("" none), for team routes.
	TeamOf func(ctx context.Context, account, user string) (string, error)
}

// Notify queues the notice for each of its destinations (none: nothing to do).
func (n *Notifier) Notify(ctx context.Context, notice Notice) error {
	if notice.ID == "" || notice.Event == "" {
		return errors.New("notice without an id or an event")
	}
	if n.TeamOf != nil && notice.Team == "" && len(n.Router.Teams) > 0 {
		team, err := n.TeamOf(ctx, notice.Account, notice.User)
		if err != nil {
			return fmt.Errorf("team of %s: %w", notice.Identity, err)
		}
		notice.Team = team
	}
	var ds []Delivery
	for _, rt := range n.Router.Routes(notice) {
		ds = append(ds, Delivery{ID: deliveryID(notice.ID, rt.Channel, rt.Destination), Channel: rt.Channel,
			Destination: rt.Destination, Notice: notice})
	}
	if len(ds) == 0 {
		return nil
	}
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	if err := n.Outbox.Enqueue(ctx, ds, now().UTC()); err != nil {
		return fmt.Errorf("queue %s notice: %w", notice.Event, err)
	}
	return nil
}

// Channel delivers to one kind of destination.
type Channel interface {
	// Name is the channel's name in routes and metrics: email, sns, webhook, slack.
	Name() string
	// Send delivers msg to d.Destination. A *PermanentError says retrying cannot help.
	Send(ctx context.Context, d Delivery, msg Message) error
}

// PermanentError is a refusal that a retry would meet again (a webhook answering 400, say).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// backoff is the wait before attempt n+1 (n ≥ 1): 30 s doubling, at most an hour.
func retryDelay(n int) time.Duration {
	return backoff.Exponential(defaultFirstRetryDelay, maxRetryDelay, n)
}

// short trims an error for the outbox's last_error column.
func short(err error) string {
	s := err.Error()
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
