package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/inventory"
)

// Inventory keeps the last read of each account, and the compliance report's daily snapshots.
type Inventory struct{ db *DB }

// Inventory returns the inventory's Store on db.
func (db *DB) Inventory() *Inventory { return &Inventory{db: db} }

var _ inventory.Store = (*Inventory)(nil)

// SaveAccount implements inventory.Store: the account's last read replaces the one before.
func (s *Inventory) SaveAccount(ctx context.Context, a inventory.Account) error {
	doc, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO inventory (account_id, read_at, document) VALUES ($1, $2, $3)
			ON CONFLICT (account_id) DO UPDATE SET read_at = excluded.read_at, document = excluded.document`, a.ID, a.ReadAt.UnixMicro(), string(doc))
		if err != nil {
			return fmt.Errorf("save the inventory of %s: %w", a.ID, err)
		}
		return nil
	})
}

// Accounts implements inventory.Store: every account's last read, by account id.
func (s *Inventory) Accounts(ctx context.Context) ([]inventory.Account, error) {
	rows, err := s.db.query(ctx, `SELECT document FROM inventory ORDER BY account_id`)
	if err != nil {
		return nil, fmt.Errorf("read the inventory: %w", err)
	}
	defer rows.Close()
	var out []inventory.Account
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		var a inventory.Account
		if err := json.Unmarshal([]byte(doc), &a); err != nil {
			return nil, fmt.Errorf("read the inventory: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SaveSnapshot stores the day's compliance summary (a JSON document), replacing one of the same day.
func (s *Inventory) SaveSnapshot(ctx context.Context, day string, at time.Time, summary []byte) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO compliance_snapshots (day, taken_at, summary) VALUES ($1, $2, $3)
			ON CONFLICT (day) DO UPDATE SET taken_at = excluded.taken_at, summary = excluded.summary`, day, at.UnixMicro(), string(summary))
		return err
	})
}

// Snapshots returns the summaries of the days from since on, oldest first.
func (s *Inventory) Snapshots(ctx context.Context, since string) ([][]byte, error) {
	rows, err := s.db.query(ctx, `SELECT summary FROM compliance_snapshots WHERE day >= $1 ORDER BY day`, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, err
		}
		out = append(out, []byte(doc))
	}
	return out, rows.Err()
}
