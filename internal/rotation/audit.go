package rotation

import (
	"context"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/vault"
)

// Recorder keeps the audit trail: events are recorded in the unit of work ctx carries, so that a
// step and its record commit together or not at all.
type Recorder interface {
	Record(ctx context.Context, events ...audit.Event) error
}

// Audit actions of the engine. Targets are identities; details name keys by id, never a secret.
const (
	ActionAdopted     = "key.adopted"      // a key that predates Keyward is now tracked
	ActionStarted     = "rotation.started" // the record is written; the key is about to be created
	ActionCreated     = "key.created"      // the new key exists and its secret is sealed in the vault
	ActionRotated     = "key.rotated"      // verified and promoted: consumers now get the new key
	ActionFailed      = "rotation.failed"  // the old key was left as it was
	ActionHeld        = "rotation.held"    // the old key is still in use: not deactivated
	ActionBlocked     = "rotation.blocked" // no room for a new key that Keyward may make
	ActionDeactivated = "key.deactivated"
	ActionDeleted     = "key.deleted"   // deleted in the cloud, its secret shredded
	ActionDestroyed   = "key.destroyed" // found gone from the cloud: its secret shredded
)

// step is an audit event of the engine about an identity, from which a notice may follow.
type step struct {
	audit.Event
	id vault.Identity
}

// event makes an audit event by this engine about an identity; detail is key, value pairs.
func (e *Engine) event(action string, id vault.Identity, outcome string, detail ...string) step {
	d := make(map[string]string, len(detail)/2)
	for i := 0; i+1 < len(detail); i += 2 {
		d[detail[i]] = detail[i+1]
	}
	return step{Event: audit.Event{Actor: "engine:" + e.Owner, Action: action, Target: id.String(), Outcome: outcome, Detail: d}, id: id}
}

// record adds steps to the audit trail, and queues the notices they call for, in the unit of work
// ctx carries if any: with it, what is recorded and told commits with the step, or not at all.
func (e *Engine) record(ctx context.Context, steps ...step) error {
	if e.Audit != nil {
		events := make([]audit.Event, len(steps))
		for i, s := range steps {
			events[i] = s.Event
		}
		if err := e.Audit.Record(ctx, events...); err != nil {
			return err
		}
	}
	if e.Notifier == nil {
		return nil
	}
	for _, s := range steps {
		if n, ok := e.noticeFor(ctx, s); ok {
			if err := e.Notifier.Notify(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// recorded makes a change in the vault and records it, in one transaction.
func (e *Engine) recorded(ctx context.Context, change func(ctx context.Context) error, steps ...step) error {
	return e.Store.Atomically(ctx, func(ctx context.Context) error {
		if err := change(ctx); err != nil {
			return err
		}
		return e.record(ctx, steps...)
	})
}

// Notifier queues notices in the unit of work ctx carries.
type Notifier interface {
	Notify(ctx context.Context, n notify.Notice) error
}

// noticeFor returns the notice a step calls for. Its id makes it once per fact: per key for a
// rotation, a deactivation or a deletion; per rotation for a failure; per key or identity and day
// for a hold or a block, which every pass finds again.
func (e *Engine) noticeFor(ctx context.Context, s step) (notify.Notice, bool) {
	d := s.Detail
	n := notify.Notice{Time: e.now(), Account: s.id.AccountID, User: s.id.UserName, Identity: s.id.String(),
		Owners: e.owners, Reason: d["reason"]}
	day := n.Time.Format("2006-01-02")
	switch s.Action {
	case ActionRotated:
		n.Event, n.OldKeyID, n.NewKeyID = notify.KeyRotated, d["old_key_id"], d["new_key_id"]
		n.ID = n.Event + "|" + n.NewKeyID
	case ActionDeactivated:
		n.Event, n.KeyID = notify.KeyDeactivated, d["access_key_id"]
		n.ID = n.Event + "|" + n.KeyID
	case ActionDeleted, ActionDestroyed:
		// A key found gone (deleted by someone else, or by a process that crashed before it could
		// record it) is told of as deleted: the notice has the same id either way, so it goes once.
		n.Event, n.KeyID = notify.KeyDeleted, d["access_key_id"]
		n.ID = n.Event + "|" + n.KeyID
	case ActionFailed, ActionDeliveryFailed:
		n.Event, n.OldKeyID, n.NewKeyID = notify.RotationFailed, d["old_key_id"], d["new_key_id"]
		if s.Action == ActionDeliveryFailed {
			n.Event = notify.DeliveryFailed
		}
		n.ID = n.Event + "|" + s.id.String() + "|" + d["rotation"]
	case ActionHeld:
		n.Event, n.KeyID = notify.RotationHeld, d["access_key_id"]
		n.ID = n.Event + "|" + n.KeyID + "|" + day
	case ActionBlocked:
		n.Event = notify.RotationBlocked
		n.ID = n.Event + "|" + s.id.String() + "|" + day
	case ActionLeaked:
		n.Event, n.KeyID = notify.KeyLeaked, d["access_key_id"]
		n.Reason = d["reason"]
		n.ID = n.Event + "|" + n.KeyID
	default:
		return n, false
	}
	return n, true
}

// upcoming queues the notice that a previous key will be deactivated at the given time.
func (e *Engine) upcoming(ctx context.Context, id vault.Identity, keyID string, at time.Time) error {
	if e.Notifier == nil {
		return nil
	}
	return e.Notifier.Notify(ctx, notify.Notice{ID: notify.KeyDeactivationComing + "|" + keyID, Event: notify.KeyDeactivationComing,
		Time: e.now(), Account: id.AccountID, User: id.UserName, Identity: id.String(), Owners: e.owners,
		KeyID: keyID, Scheduled: at})
}

// TagOwner is the IAM user tag that names its owners: e-mail addresses, separated by spaces.
const TagOwner = "keyward:owner"

// forUser returns the engine a visit of u runs on: a copy that knows u's owners (from its tag), for
// the notices of the visit. Visits of different users run on different copies, so this is no shared
// state; the copy shares everything else (the store, the cloud, the runner) with e.
func (e *Engine) forUser(u cloud.User) *Engine {
	v := *e
	v.owners = strings.Fields(u.Tags[TagOwner])
	return &v
}
