package store

import (
	"context"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/vault"
)

// Deliveries is the delivery records' Store over SQL.
type Deliveries struct{ db *DB }

// Deliveries returns the delivery records' Store on db.
func (db *DB) Deliveries() *Deliveries { return &Deliveries{db: db} }

var _ delivery.Store = (*Deliveries)(nil)

// RecordDelivery implements delivery.Store: the target now holds the key (in the unit of work ctx
// carries, if any).
func (s *Deliveries) RecordDelivery(ctx context.Context, r delivery.Record) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO deliveries (cloud, account_id, user_name, target, access_key_id, delivered_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (cloud, account_id, user_name, target) DO UPDATE SET access_key_id = excluded.access_key_id, delivered_at = excluded.delivered_at`,
			r.Identity.Cloud, r.Identity.AccountID, r.Identity.UserName, r.Target, r.AccessKeyID, r.DeliveredAt.UnixMicro())
		if err != nil {
			return fmt.Errorf("record delivery of %s to %s: %w", r.Identity, r.Target, err)
		}
		return nil
	})
}

// Deliveries implements delivery.Store: what each target of the identity was last given, by target.
func (s *Deliveries) Deliveries(ctx context.Context, id vault.Identity) ([]delivery.Record, error) {
	return s.list(ctx, `SELECT cloud, account_id, user_name, target, access_key_id, delivered_at FROM deliveries
		WHERE cloud = $1 AND account_id = $2 AND user_name = $3 ORDER BY target`, id.Cloud, id.AccountID, id.UserName)
}

// All returns every delivery record, by identity and target.
func (s *Deliveries) All(ctx context.Context) ([]delivery.Record, error) {
	return s.list(ctx, `SELECT cloud, account_id, user_name, target, access_key_id, delivered_at FROM deliveries
		ORDER BY cloud, account_id, user_name, target`)
}

func (s *Deliveries) list(ctx context.Context, q string, args ...any) ([]delivery.Record, error) {
	rows, err := s.db.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	defer rows.Close()
	var out []delivery.Record
	for rows.Next() {
		var r delivery.Record
		var at int64
		if err := rows.Scan(&r.Identity.Cloud, &r.Identity.AccountID, &r.Identity.UserName, &r.Target, &r.AccessKeyID, &at); err != nil {
			return nil, fmt.Errorf("read deliveries: %w", err)
		}
		r.DeliveredAt = time.UnixMicro(at).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}
