package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// Vault is the vault's Store over SQL.
type Vault struct{ db *DB }

// Vault returns the vault's Store on db.
func (db *DB) Vault() *Vault { return &Vault{db: db} }

var _ vault.Store = (*Vault)(nil)

// Columns of a version, and of its identity where the caller does not know it already.
const (
	identityColumns = `i.cloud, i.account_id, i.user_name`
	versionColumns  = `v.version, v.access_key_id, v.state, v.origin,
	v.created_at, v.current_at, v.previous_at, v.inactive_at, v.destroyed_at`
	sealedColumns = `v.kek_id, v.wrapped_key, v.ciphertext`
)

type scanner interface{ Scan(dest ...any) error }

// scanVersion reads versionColumns (then extra) into a Version of identity id; with id nil it reads
// identityColumns first.
func scanVersion(row scanner, id *vault.Identity, extra ...any) (vault.Version, error) {
	var v vault.Version
	var created int64
	var current, previous, inactive, destroyed sql.NullInt64
	dest := make([]any, 0, 12+len(extra))
	if id == nil {
		dest = append(dest, &v.Identity.Cloud, &v.Identity.AccountID, &v.Identity.UserName)
	} else {
		v.Identity = *id
	}
	dest = append(dest, &v.Number, &v.AccessKeyID, &v.State, &v.Origin, &created, &current, &previous, &inactive, &destroyed)
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return v, err
	}
	v.CreatedAt = time.UnixMicro(created).UTC()
	v.CurrentAt, v.PreviousAt = fromMicros(current), fromMicros(previous)
	v.InactiveAt, v.DestroyedAt = fromMicros(inactive), fromMicros(destroyed)
	return v, nil
}

// scanRecord reads a version and sealedColumns.
func scanRecord(row scanner, id *vault.Identity) (vault.Record, error) {
	var kekID sql.NullString
	var rec vault.Record
	v, err := scanVersion(row, id, &kekID, &rec.Sealed.WrappedKey, &rec.Sealed.Ciphertext)
	if err != nil {
		return rec, err
	}
	rec.Version = v
	rec.Sealed.KEKID = kekID.String
	rec.HasSecret = rec.Sealed.Ciphertext != nil
	return rec, nil
}

// identityByName finds an identity's row id from $1 cloud, $2 account, $3 user name. Reads use it as a
// scalar subquery, so that the version is found through its index whatever the planner's statistics
// say (on a fresh PostgreSQL table a join was planned as a scan of every current version).
const identityByName = `SELECT id FROM identities WHERE cloud = $1 AND account_id = $2 AND user_name = $3`

// selectRecordOf reads records of the identity named by $1, $2, $3; the caller adds conditions.
const selectRecordOf = `SELECT ` + versionColumns + `, ` + sealedColumns + `
	FROM credential_versions v WHERE v.identity_id = (` + identityByName + `)`

// NextVersion implements vault.Store. Inside a unit of work on PostgreSQL it first locks the
// identity's row, as CreateVersion does, so that the number cannot be taken before the insert: a
// conflict there would abort the whole unit, not just the insert.
func (s *Vault) NextVersion(ctx context.Context, id vault.Identity) (int64, error) {
	if tx := s.db.txFrom(ctx); tx != nil && s.db.driver == Postgres {
		identity, err := s.identityID(ctx, tx, id, false, time.Time{})
		if errors.Is(err, vault.ErrNotFound) {
			return 1, nil
		} else if err != nil {
			return 0, fmt.Errorf("next version of %s: %w", id, err)
		}
		var n sql.NullInt64
		if err := tx.queryRow(ctx, `SELECT MAX(version) FROM credential_versions WHERE identity_id = $1`, identity).Scan(&n); err != nil {
			return 0, fmt.Errorf("next version of %s: %w", id, err)
		}
		return n.Int64 + 1, nil
	}
	var n sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT MAX(version) FROM credential_versions WHERE identity_id = (`+identityByName+`)`,
		id.Cloud, id.AccountID, id.UserName).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("next version of %s: %w", id, err)
	}
	return n.Int64 + 1, nil
}

// identityRows are the identity rows a transaction has looked up, and locked (PostgreSQL): state
// that follows a group's savepoints (see txState).
type identityRows struct{ m map[vault.Identity]int64 }

type identitiesKey struct{}

func (r *identityRows) snapshot() func() {
	m := maps.Clone(r.m)
	return func() { r.m = m }
}

// identityID returns the row id of an identity, creating the row when create is set, and holds the
// row's lock (PostgreSQL) for the rest of the transaction: writers of one identity's versions queue.
//
// On SQLite, where BEGIN IMMEDIATE has locked the whole database already, a row id once committed is
// remembered (identities are never deleted), which spares a query in every write.
func (s *Vault) identityID(ctx context.Context, tx *Tx, id vault.Identity, create bool, at time.Time) (int64, error) {
	seen := txState(tx, identitiesKey{}, func() *identityRows { return &identityRows{m: map[vault.Identity]int64{}} })
	if rowID, ok := seen.m[id]; ok { // locked already by this transaction
		return rowID, nil
	}
	if s.db.driver == SQLite {
		if rowID, ok := s.db.identityIDs.Load(id); ok {
			return rowID.(int64), nil
		}
	}
	var rowID int64
	defer func() {
		if rowID == 0 {
			return
		}
		seen.m[id] = rowID
		if s.db.driver == SQLite { // once committed: a row created by a transaction rolled back does not exist
			tx.afterCommit = append(tx.afterCommit, func(context.Context) { s.db.identityIDs.Store(id, rowID) })
		}
	}()
	err := tx.queryRow(ctx, s.db.identityForUpdate, id.Cloud, id.AccountID, id.UserName).Scan(&rowID)
	if errors.Is(err, sql.ErrNoRows) && create {
		// Another writer may be creating the same identity: let its row win and read it back.
		err = tx.queryRow(ctx, `INSERT INTO identities (cloud, account_id, user_name, created_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (cloud, account_id, user_name) DO NOTHING RETURNING id`,
			id.Cloud, id.AccountID, id.UserName, micros(at)).Scan(&rowID)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.queryRow(ctx, s.db.identityForUpdate, id.Cloud, id.AccountID, id.UserName).Scan(&rowID)
		} else if err != nil {
			return 0, fmt.Errorf("create identity %s: %w", id, err)
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("identity %s: %w", id, vault.ErrNotFound)
	}
	return rowID, err
}

// demoteCurrent makes the identity's current version previous. Nothing reads its result: on
// PostgreSQL it travels with the next statement (the new current version's insert).
func (s *Vault) demoteCurrent(ctx context.Context, tx *Tx, identity int64, at time.Time) error {
	return tx.execLater(ctx, `UPDATE credential_versions SET state = 'previous', previous_at = $1
		WHERE identity_id = $2 AND state = 'current'`, micros(at), identity)
}

// CreateVersion implements vault.Store.
func (s *Vault) CreateVersion(ctx context.Context, rec vault.Record) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		identity, err := s.identityID(ctx, tx, rec.Identity, true, rec.CreatedAt)
		if err != nil {
			return err
		}
		// Version 1 has nothing to demote (and the one-current index would refuse a second current).
		if rec.State == vault.StateCurrent && rec.Number > 1 {
			if err := s.demoteCurrent(ctx, tx, identity, rec.CreatedAt); err != nil {
				return fmt.Errorf("demote current version of %s: %w", rec.Identity, err)
			}
		}
		_, err = tx.exec(ctx, `INSERT INTO credential_versions (identity_id, version, access_key_id, state,
			origin, kek_id, wrapped_key, ciphertext, created_at, current_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			identity, rec.Number, rec.AccessKeyID, rec.State, rec.Origin, nullString(rec.Sealed.KEKID),
			rec.Sealed.WrappedKey, rec.Sealed.Ciphertext, micros(rec.CreatedAt), nullMicros(rec.CurrentAt))
		switch kind, constraint := constraintViolation(err); {
		case kind == primaryKeyViolation:
			return fmt.Errorf("version %d of %s: %w", rec.Number, rec.Identity, vault.ErrConflict)
		case kind == uniqueViolation && constraint == "credential_versions_one_current":
			return fmt.Errorf("current version of %s: %w", rec.Identity, vault.ErrConflict)
		case kind == uniqueViolation:
			return fmt.Errorf("%s: %w", rec.AccessKeyID, vault.ErrDuplicate)
		case err != nil:
			return fmt.Errorf("insert version %d of %s: %w", rec.Number, rec.Identity, err)
		}
		return nil
	})
}

// CurrentVersion implements vault.Store.
func (s *Vault) CurrentVersion(ctx context.Context, id vault.Identity) (vault.Record, error) {
	rec, err := scanRecord(s.db.queryRow(ctx, selectRecordOf+` AND v.state = 'current'`,
		id.Cloud, id.AccountID, id.UserName), &id)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, fmt.Errorf("no current version: %w", vault.ErrNotFound)
	}
	return rec, err
}

// Version implements vault.Store.
func (s *Vault) Version(ctx context.Context, id vault.Identity, number int64) (vault.Record, error) {
	rec, err := scanRecord(s.db.queryRow(ctx, selectRecordOf+` AND v.version = $4`,
		id.Cloud, id.AccountID, id.UserName, number), &id)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, vault.ErrNotFound
	}
	return rec, err
}

// Identities implements vault.Store.
func (s *Vault) Identities(ctx context.Context, userName, accountID string) ([]vault.Identity, error) {
	rows, err := s.db.query(ctx, `SELECT cloud, account_id, user_name FROM identities
		WHERE ($1 = '' OR user_name = $1) AND ($2 = '' OR account_id = $2)
		ORDER BY cloud, account_id, user_name`, userName, accountID)
	ids, err := collect(rows, err, func(rows scanner) (vault.Identity, error) {
		var id vault.Identity
		err := rows.Scan(&id.Cloud, &id.AccountID, &id.UserName)
		return id, err
	})
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	return ids, nil
}

// Versions implements vault.Store.
func (s *Vault) Versions(ctx context.Context) ([]vault.Version, error) {
	rows, err := s.db.query(ctx, `SELECT `+identityColumns+`, `+versionColumns+`, v.ciphertext IS NOT NULL
		FROM credential_versions v JOIN identities i ON i.id = v.identity_id
		ORDER BY i.cloud, i.account_id, i.user_name, v.version`)
	out, err := collect(rows, err, scanListedVersion(nil))
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	return out, nil
}

// VersionsOf implements vault.Store.
func (s *Vault) VersionsOf(ctx context.Context, id vault.Identity) ([]vault.Version, error) {
	rows, err := s.db.query(ctx, `SELECT `+versionColumns+`, v.ciphertext IS NOT NULL
		FROM credential_versions v WHERE v.identity_id = (`+identityByName+`) ORDER BY v.version`,
		id.Cloud, id.AccountID, id.UserName)
	out, err := collect(rows, err, scanListedVersion(&id))
	if err != nil {
		return nil, fmt.Errorf("versions of %s: %w", id, err)
	}
	return out, nil
}

// scanListedVersion reads a listed version (see scanVersion) and whether it holds a secret.
func scanListedVersion(id *vault.Identity) func(scanner) (vault.Version, error) {
	return func(rows scanner) (vault.Version, error) {
		var hasSecret bool
		v, err := scanVersion(rows, id, &hasSecret)
		v.HasSecret = hasSecret
		return v, err
	}
}

// Transition implements vault.Store.
func (s *Vault) Transition(ctx context.Context, id vault.Identity, number int64, from, to vault.State, at time.Time) error {
	if err := s.transition(ctx, id, number, from, to, at); err != nil {
		return err
	}
	if to == vault.StateDestroyed && s.db.driver == SQLite {
		// secure_delete zeroed the sealed material in the database pages; the WAL still holds the
		// old page images until a checkpoint copies the new ones back and truncates it.
		s.db.onCommit(ctx, func(ctx context.Context) {
			_, _ = s.db.sql.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		})
	}
	return nil
}

func (s *Vault) transition(ctx context.Context, id vault.Identity, number int64, from, to vault.State, at time.Time) error {
	column := map[vault.State]string{
		vault.StateCurrent: "current_at", vault.StatePrevious: "previous_at",
		vault.StateInactive: "inactive_at", vault.StateDestroyed: "destroyed_at",
	}[to]
	if column == "" {
		return fmt.Errorf("%w: to %s", vault.ErrInvalidTransition, to)
	}
	return s.db.inTx(ctx, func(tx *Tx) error {
		identity, err := s.identityID(ctx, tx, id, false, at)
		if err != nil {
			return err
		}
		if to == vault.StateCurrent {
			if err := s.demoteCurrent(ctx, tx, identity, at); err != nil {
				return err
			}
		}
		shred := ""
		if to == vault.StateDestroyed {
			shred = ", kek_id = NULL, wrapped_key = NULL, ciphertext = NULL"
		}
		res, err := tx.exec(ctx, `UPDATE credential_versions SET state = $1, `+column+` = $2`+shred+`
			WHERE identity_id = $3 AND version = $4 AND state = $5`, to, micros(at), identity, number, from)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			var state string
			err := tx.queryRow(ctx, `SELECT state FROM credential_versions WHERE identity_id = $1 AND version = $2`,
				identity, number).Scan(&state)
			if errors.Is(err, sql.ErrNoRows) {
				return vault.ErrNotFound
			}
			return fmt.Errorf("%w: it is %s, not %s", vault.ErrConflict, state, from)
		}
		return nil
	})
}

// AttachSecret implements vault.Store.
func (s *Vault) AttachSecret(ctx context.Context, id vault.Identity, number int64, sealed vault.Sealed) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE credential_versions SET kek_id = $4, wrapped_key = $5, ciphertext = $6
			WHERE identity_id = (`+identityByName+`) AND version = $7 AND origin = 'adopted'
			AND ciphertext IS NULL AND state <> 'destroyed'`,
			id.Cloud, id.AccountID, id.UserName, sealed.KEKID, sealed.WrappedKey, sealed.Ciphertext, number)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("version %d of %s is not an adopted version without a secret: %w", number, id, vault.ErrConflict)
		}
		return nil
	})
}

// VersionByKey implements vault.Store.
func (s *Vault) VersionByKey(ctx context.Context, accessKeyID string) (vault.Version, error) {
	var hasSecret bool
	v, err := scanVersion(s.db.queryRow(ctx, `SELECT `+identityColumns+`, `+versionColumns+`, v.ciphertext IS NOT NULL
		FROM credential_versions v JOIN identities i ON i.id = v.identity_id WHERE v.access_key_id = $1`, accessKeyID), nil, &hasSecret)
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("%s: %w", accessKeyID, vault.ErrNotFound)
	}
	v.HasSecret = hasSecret
	return v, err
}

// KEKIDs implements vault.Store.
func (s *Vault) KEKIDs(ctx context.Context) ([]string, error) {
	rows, err := s.db.query(ctx, `SELECT kek_id FROM credential_versions WHERE kek_id IS NOT NULL
		UNION SELECT kek_id FROM signing_keys UNION SELECT kek_id FROM sealed_blobs ORDER BY kek_id`)
	ids, err := collect(rows, err, scanString)
	if err != nil {
		return nil, fmt.Errorf("list key-encryption keys in use: %w", err)
	}
	return ids, nil
}

// Rewrap implements vault.Store, in two phases, so that no KEK (perhaps AWS KMS) is called while the
// write transaction is open: everything is read and rewrapped first, outside any transaction
// (rewrapUpdates); then one transaction writes every new wrapped key, each only where the old one is
// still in place (applyRewrap). An item changed meanwhile, or one written under the old KEK
// meanwhile, fails the whole rewrap (run it again): all are rewrapped or none.
func (s *Vault) Rewrap(ctx context.Context, fn func(vault.Record) (string, []byte, error),
	fnKey func(vault.SealedSigningKey) (string, []byte, error), fnBlob func(string, vault.Sealed) (string, []byte, error),
	progress func(done, total int), within func(ctx context.Context, n int) error) (int, error) {
	if s.db.txFrom(ctx) != nil {
		return 0, errors.New("rewrap: not inside a unit of work (it calls the key-encryption keys before it writes)")
	}
	items, err := s.sealedItems(ctx)
	if err != nil {
		return 0, err
	}
	updates, err := items.rewrap(fn, fnKey, fnBlob, progress)
	if err != nil {
		return 0, err
	}
	if err := s.applyRewrap(ctx, updates, within); err != nil {
		return 0, err
	}
	return len(updates), nil
}

// sealedItems is everything whose data key is wrapped by a KEK.
type sealedItems struct {
	recs  []vault.Record
	keys  []vault.SealedSigningKey
	blobs []sealedBlob
}

type sealedBlob struct {
	name   string
	sealed vault.Sealed
}

// sealedItems reads every version with a secret, every signing key and every sealed blob.
func (s *Vault) sealedItems(ctx context.Context) (sealedItems, error) {
	var items sealedItems
	rows, err := s.db.query(ctx, `SELECT `+identityColumns+`, `+versionColumns+`, `+sealedColumns+`
		FROM credential_versions v JOIN identities i ON i.id = v.identity_id
		WHERE v.wrapped_key IS NOT NULL ORDER BY v.identity_id, v.version`)
	if items.recs, err = collect(rows, err, func(rows scanner) (vault.Record, error) { return scanRecord(rows, nil) }); err != nil {
		return items, err
	}
	rows, err = s.db.query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys ORDER BY created_at, id`)
	if items.keys, err = collect(rows, err, scanSigningKey); err != nil {
		return items, err
	}
	rows, err = s.db.query(ctx, `SELECT name, kek_id, wrapped_key, ciphertext FROM sealed_blobs ORDER BY name`)
	items.blobs, err = collect(rows, err, func(rows scanner) (sealedBlob, error) {
		var b sealedBlob
		err := rows.Scan(&b.name, &b.sealed.KEKID, &b.sealed.WrappedKey, &b.sealed.Ciphertext)
		return b, err
	})
	return items, err
}

// rewrapUpdate is one item's new wrapped key: the statement that writes it, the item's key, and the
// wrapped key it replaces (written only where that is still in place).
type rewrapUpdate struct {
	query         string
	key           string
	oldKEK, kekID string
	old, wrapped  []byte
}

const (
	rewrapVersion = `UPDATE credential_versions SET kek_id = $1, wrapped_key = $2 WHERE access_key_id = $3 AND kek_id = $4 AND wrapped_key = $5`
	rewrapKey     = `UPDATE signing_keys SET kek_id = $1, wrapped_key = $2 WHERE id = $3 AND kek_id = $4 AND wrapped_key = $5`
	rewrapBlob    = `UPDATE sealed_blobs SET kek_id = $1, wrapped_key = $2 WHERE name = $3 AND kek_id = $4 AND wrapped_key = $5`
)

// rewrap asks fn, fnKey and fnBlob (which call the KEKs) for every item's new wrapped key.
func (items sealedItems) rewrap(fn func(vault.Record) (string, []byte, error), fnKey func(vault.SealedSigningKey) (string, []byte, error),
	fnBlob func(string, vault.Sealed) (string, []byte, error), progress func(done, total int)) ([]rewrapUpdate, error) {
	total := len(items.recs) + len(items.keys) + len(items.blobs)
	updates := make([]rewrapUpdate, 0, total)
	add := func(query, key string, old vault.Sealed, kekID string, wrapped []byte, err error) error {
		if err != nil {
			return err
		}
		updates = append(updates, rewrapUpdate{query: query, key: key, oldKEK: old.KEKID, kekID: kekID, old: old.WrappedKey, wrapped: wrapped})
		if progress != nil {
			progress(len(updates), total)
		}
		return nil
	}
	for _, rec := range items.recs {
		kekID, wrapped, err := fn(rec)
		if err := add(rewrapVersion, rec.AccessKeyID, rec.Sealed, kekID, wrapped, err); err != nil {
			return nil, err
		}
	}
	for _, key := range items.keys {
		kekID, wrapped, err := fnKey(key)
		if err := add(rewrapKey, key.ID, key.Sealed, kekID, wrapped, err); err != nil {
			return nil, err
		}
	}
	for _, b := range items.blobs {
		kekID, wrapped, err := fnBlob(b.name, b.sealed)
		if err := add(rewrapBlob, b.name, b.sealed, kekID, wrapped, err); err != nil {
			return nil, err
		}
	}
	return updates, nil
}

// applyRewrap writes the new wrapped keys in one transaction, each only where the old one is still in
// place, checks that nothing is left under the old KEKs, and runs within (an audit record) in it.
func (s *Vault) applyRewrap(ctx context.Context, updates []rewrapUpdate, within func(ctx context.Context, n int) error) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		oldKEKs := map[string]bool{}
		for _, u := range updates {
			res, err := tx.exec(ctx, u.query, u.kekID, u.wrapped, u.key, u.oldKEK, u.old)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n != 1 {
				return fmt.Errorf("%s changed while it was being rewrapped: run the rewrap again", u.key)
			}
			oldKEKs[u.oldKEK] = true
		}
		for kek := range oldKEKs {
			var left int64
			if err := tx.queryRow(ctx, `SELECT (SELECT COUNT(*) FROM credential_versions WHERE kek_id = $1)
				+ (SELECT COUNT(*) FROM signing_keys WHERE kek_id = $1) + (SELECT COUNT(*) FROM sealed_blobs WHERE kek_id = $1)`,
				kek).Scan(&left); err != nil {
				return err
			}
			if left > 0 {
				return fmt.Errorf("%d items were written under %s while the rewrap ran: run it again", left, kek)
			}
		}
		if within != nil {
			return within(context.WithValue(ctx, txKey{}, tx), len(updates))
		}
		return nil
	})
}

// collect reads every row of a query (its rows and error) with scan, and closes the rows.
func collect[T any](rows rowsScanner, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanString reads a row of one text column, for collect.
func scanString(rows scanner) (string, error) {
	var v string
	err := rows.Scan(&v)
	return v, err
}

const signingKeyColumns = `id, purpose, public_key, kek_id, wrapped_key, ciphertext, created_at`

func scanSigningKey(rows scanner) (vault.SealedSigningKey, error) {
	var k vault.SealedSigningKey
	var pub []byte
	var created int64
	err := rows.Scan(&k.ID, &k.Purpose, &pub, &k.Sealed.KEKID, &k.Sealed.WrappedKey, &k.Sealed.Ciphertext, &created)
	k.Public, k.CreatedAt = pub, time.UnixMicro(created).UTC()
	return k, err
}

// CreateSigningKey implements vault.Store.
func (s *Vault) CreateSigningKey(ctx context.Context, k vault.SealedSigningKey) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO signing_keys (`+signingKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			k.ID, k.Purpose, []byte(k.Public), k.Sealed.KEKID, k.Sealed.WrappedKey, k.Sealed.Ciphertext, micros(k.CreatedAt))
		return err
	})
}

// SigningKeys implements vault.Store.
func (s *Vault) SigningKeys(ctx context.Context, purpose string) ([]vault.SealedSigningKey, error) {
	rows, err := s.db.query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys WHERE purpose = $1 ORDER BY created_at, id`, purpose)
	return collect(rows, err, scanSigningKey)
}

// PutBlob implements vault.Store.
func (s *Vault) PutBlob(ctx context.Context, name string, sealed vault.Sealed, at time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO sealed_blobs (name, kek_id, wrapped_key, ciphertext, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET kek_id = excluded.kek_id,
			wrapped_key = excluded.wrapped_key, ciphertext = excluded.ciphertext, created_at = excluded.created_at`,
			name, sealed.KEKID, sealed.WrappedKey, sealed.Ciphertext, micros(at))
		return err
	})
}

// Blob implements vault.Store.
func (s *Vault) Blob(ctx context.Context, name string) (vault.Sealed, error) {
	var sealed vault.Sealed
	err := s.db.queryRow(ctx, `SELECT kek_id, wrapped_key, ciphertext FROM sealed_blobs WHERE name = $1`, name).
		Scan(&sealed.KEKID, &sealed.WrappedKey, &sealed.Ciphertext)
	if errors.Is(err, sql.ErrNoRows) {
		return sealed, vault.ErrNotFound
	}
	return sealed, err
}

// DeleteBlob implements vault.Store.
func (s *Vault) DeleteBlob(ctx context.Context, name string) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `DELETE FROM sealed_blobs WHERE name = $1`, name)
		return err
	})
}

// Atomically implements vault.Store: see DB.Atomically.
func (s *Vault) Atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.Atomically(ctx, fn)
}

// CurrentByAge implements vault.Store: the page in SQL (ordered by the current key's creation, cut
// by LIMIT and OFFSET), the count and the creation times in one more statement of one column.
func (s *Vault) CurrentByAge(ctx context.Context, accountID string, asc bool, offset, limit int) ([]vault.Identity, int, []time.Time, error) {
	where, args := `v.state = 'current'`, []any{}
	if accountID != "" {
		where, args = where+` AND i.account_id = $1`, append(args, accountID)
	}
	rows, err := s.db.query(ctx, `SELECT v.created_at FROM credential_versions v JOIN identities i ON i.id = v.identity_id WHERE `+where, args...)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("current keys: %w", err)
	}
	var created []time.Time
	for rows.Next() {
		var at int64
		if err := rows.Scan(&at); err != nil {
			rows.Close()
			return nil, 0, nil, err
		}
		created = append(created, time.UnixMicro(at).UTC())
	}
	rows.Close()
	order := "v.created_at ASC, i.user_name" // the oldest key first
	if asc {
		order = "v.created_at DESC, i.user_name"
	}
	n := len(args)
	rows, err = s.db.query(ctx, fmt.Sprintf(`SELECT `+identityColumns+` FROM credential_versions v JOIN identities i ON i.id = v.identity_id
		WHERE %s ORDER BY %s LIMIT $%d OFFSET $%d`, where, order, n+1, n+2), append(args, limit, offset)...)
	ids, err := collect(rows, err, func(r scanner) (vault.Identity, error) {
		var id vault.Identity
		return id, r.Scan(&id.Cloud, &id.AccountID, &id.UserName)
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("a page of identities: %w", err)
	}
	return ids, len(created), created, nil
}

// VersionsOfMany implements vault.Store.
func (s *Vault) VersionsOfMany(ctx context.Context, ids []vault.Identity) (map[vault.Identity][]vault.Version, error) {
	out := map[vault.Identity][]vault.Version{}
	if len(ids) == 0 {
		return out, nil
	}
	var cond []string
	var args []any
	for _, id := range ids {
		n := len(args)
		cond = append(cond, fmt.Sprintf("(i.cloud = $%d AND i.account_id = $%d AND i.user_name = $%d)", n+1, n+2, n+3))
		args = append(args, id.Cloud, id.AccountID, id.UserName)
	}
	rows, err := s.db.query(ctx, `SELECT `+identityColumns+`, `+versionColumns+`, v.ciphertext IS NOT NULL
		FROM credential_versions v JOIN identities i ON i.id = v.identity_id WHERE `+strings.Join(cond, " OR ")+`
		ORDER BY i.cloud, i.account_id, i.user_name, v.version`, args...)
	versions, err := collect(rows, err, scanListedVersion(nil))
	if err != nil {
		return nil, fmt.Errorf("versions of a page: %w", err)
	}
	for _, v := range versions {
		out[v.Identity] = append(out[v.Identity], v)
	}
	return out, nil
}
