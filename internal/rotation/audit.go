package rotation

import (
	"context"

	"github.com/keyward/keyward/internal/audit"
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

// event makes an audit event by this engine about an identity; detail is key, value pairs.
func (e *Engine) event(action string, id vault.Identity, outcome string, detail ...string) audit.Event {
	d := make(map[string]string, len(detail)/2)
	for i := 0; i+1 < len(detail); i += 2 {
		d[detail[i]] = detail[i+1]
	}
	return audit.Event{Actor: "engine:" + e.Owner, Action: action, Target: id.String(), Outcome: outcome, Detail: d}
}

// record adds events to the audit trail, in the unit of work ctx carries if any.
func (e *Engine) record(ctx context.Context, events ...audit.Event) error {
	if e.Audit == nil {
		return nil
	}
	return e.Audit.Record(ctx, events...)
}

// recorded makes a change in the vault and records it in the audit trail, in one transaction.
func (e *Engine) recorded(ctx context.Context, change func(ctx context.Context) error, events ...audit.Event) error {
	return e.Store.Atomically(ctx, func(ctx context.Context) error {
		if err := change(ctx); err != nil {
			return err
		}
		return e.record(ctx, events...)
	})
}
