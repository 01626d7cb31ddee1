package vault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Vault stores and reveals credentials. It is safe for concurrent use.
type Vault struct {
	store Store
	kek   KEK
	now   func() time.Time
}

// Option configures a Vault.
type Option func(*Vault)

// WithClock makes the vault read the time from now (tests move time).
func WithClock(now func() time.Time) Option { return func(v *Vault) { v.now = now } }

// New returns a vault over st whose data keys are wrapped by kek. It fails with ErrKEKMismatch when
// the store holds data keys wrapped by any other KEK: a wrong key must not be discovered one failed
// decryption at a time, nor new secrets be sealed under it beside the old ones.
func New(ctx context.Context, st Store, kek KEK, opts ...Option) (*Vault, error) {
	ids, err := st.KEKIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("check key-encryption key: %w", err)
	}
	for _, id := range ids {
		if id != kek.ID() {
			return nil, fmt.Errorf("%w: the vault's data keys are wrapped by %s, the configured key is %s", ErrKEKMismatch, id, kek.ID())
		}
	}
	v := &Vault{store: st, kek: kek, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// KEKID returns the id of the vault's key-encryption key.
func (v *Vault) KEKID() string { return v.kek.ID() }

// maxVersionRaces bounds how often a writer may lose the race for a version number to concurrent
// writers of the same identity (they each win once, so this is more than any real concurrency).
const maxVersionRaces = 32

// pause waits a little, growing and jittered, before another try at a version number.
func pause(ctx context.Context, attempt int) error {
	d := time.Duration(1+rand.IntN(2*(attempt+1))) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Import stores a key whose secret an operator already has, as the identity's current version; the
// version that was current becomes previous. For a key Keyward adopted (it predates Keyward and its
// secret was unknown), the secret is attached to that version instead, whatever its state.
// It makes the data key first (Prepare), so it is not for inside a write transaction: there, use
// ImportPrepared with what Prepare made before it.
func (v *Vault) Import(ctx context.Context, id Identity, accessKeyID string, s secret.Value) (Version, error) {
	p, err := v.Prepare(ctx, id, accessKeyID, s)
	if err != nil {
		return Version{}, err
	}
	defer p.Clear()
	return v.ImportPrepared(ctx, p)
}

// ImportPrepared is Import of what Prepare made, outside the transaction this may be part of.
func (v *Vault) ImportPrepared(ctx context.Context, p *Prepared) (Version, error) {
	id, accessKeyID := p.id, p.accessKeyID
	var out Version
	err := v.atomically(ctx, func(ctx context.Context) error {
		existing, err := v.store.VersionByKey(ctx, accessKeyID)
		switch {
		case errors.Is(err, ErrNotFound):
			out, err = v.put(ctx, p, StateCurrent, OriginImported)
			return err
		case err != nil:
			return err
		case existing.Identity != id:
			return fmt.Errorf("%s belongs to %s, not %s: %w", accessKeyID, existing.Identity, id, ErrDuplicate)
		case existing.Origin != OriginAdopted || existing.HasSecret || existing.State == StateDestroyed:
			return fmt.Errorf("%s: %w", accessKeyID, ErrDuplicate)
		}
		sealed, err := p.sealAs(existing.Number)
		if err != nil {
			return err
		}
		if err := v.store.AttachSecret(ctx, id, existing.Number, sealed); err != nil {
			return fmt.Errorf("attach the secret of %s: %w", accessKeyID, err)
		}
		existing.HasSecret = true
		out = existing
		return nil
	})
	return out, err
}

// AddPending stores a key Keyward has just created, before anything else is done with it. It makes
// the data key first, so it is not for inside a write transaction: there, use AddPendingPrepared.
func (v *Vault) AddPending(ctx context.Context, id Identity, accessKeyID string, s secret.Value) (Version, error) {
	p, err := v.Prepare(ctx, id, accessKeyID, s)
	if err != nil {
		return Version{}, err
	}
	defer p.Clear()
	return v.AddPendingPrepared(ctx, p)
}

// AddPendingPrepared is AddPending of what Prepare made, outside the transaction this may be part of.
func (v *Vault) AddPendingPrepared(ctx context.Context, p *Prepared) (Version, error) {
	var out Version
	err := v.atomically(ctx, func(ctx context.Context) error {
		var err error
		out, err = v.put(ctx, p, StatePending, OriginCreated)
		return err
	})
	return out, err
}

func (v *Vault) put(ctx context.Context, p *Prepared, state State, origin Origin) (Version, error) {
	id, accessKeyID := p.id, p.accessKeyID
	return v.create(ctx, id, accessKeyID, func(number int64) (Record, error) {
		sealed, err := p.sealAs(number)
		if err != nil {
			return Record{}, err
		}
		now := v.now().UTC()
		rec := Record{
			Version: Version{Identity: id, Number: number, AccessKeyID: accessKeyID, State: state,
				Origin: origin, HasSecret: true, CreatedAt: now},
			Sealed: sealed,
		}
		if state == StateCurrent {
			rec.CurrentAt = now
		}
		return rec, nil
	})
}

// atomically runs fn as one transaction of the store. The version number a new version gets is read
// in that transaction, so on SQLite (one writer at a time) it cannot be taken meanwhile; elsewhere a
// writer that lost the race for it (ErrConflict) runs fn again, under a new number, after a short
// pause. Inside a caller's unit of work the caller's transaction decides instead.
func (v *Vault) atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := v.store.Atomically(ctx, fn)
		if !errors.Is(err, ErrConflict) || attempt >= maxVersionRaces {
			return err
		}
		if err := pause(ctx, attempt); err != nil {
			return err
		}
	}
}

// create stores the record build makes for the identity's next version number (bound into the
// sealed material), in the caller's transaction (see atomically).
func (v *Vault) create(ctx context.Context, id Identity, accessKeyID string, build func(number int64) (Record, error)) (Version, error) {
	number, err := v.store.NextVersion(ctx, id)
	if err != nil {
		return Version{}, fmt.Errorf("store %s for %s: %w", accessKeyID, id, err)
	}
	rec, err := build(number)
	if err != nil {
		return Version{}, err
	}
	if err := v.store.CreateVersion(ctx, rec); err != nil {
		return Version{}, fmt.Errorf("store %s for %s: %w", accessKeyID, id, err)
	}
	return rec.Version, nil
}

// Adopt records a key that existed in the cloud before Keyward managed the identity, without its
// secret, as the identity's current version, so that its replacement and retirement are tracked like
// any other. createdAt is the key's creation time in the cloud.
func (v *Vault) Adopt(ctx context.Context, id Identity, accessKeyID string, createdAt time.Time) (Version, error) {
	if err := id.Validate(); err != nil {
		return Version{}, err
	}
	if err := ValidateAccessKeyID(accessKeyID); err != nil {
		return Version{}, err
	}
	var out Version
	err := v.atomically(ctx, func(ctx context.Context) error {
		var err error
		out, err = v.create(ctx, id, accessKeyID, func(number int64) (Record, error) {
			return Record{Version: Version{Identity: id, Number: number, AccessKeyID: accessKeyID, State: StateCurrent,
				Origin: OriginAdopted, CreatedAt: createdAt.UTC(), CurrentAt: v.now().UTC()}}, nil
		})
		return err
	})
	return out, err
}

// CurrentByAge pages the identities with a current key by its age (see Store.CurrentByAge).
func (v *Vault) CurrentByAge(ctx context.Context, accountID string, asc bool, offset, limit int) ([]Identity, int, []time.Time, error) {
	return v.store.CurrentByAge(ctx, accountID, asc, offset, limit)
}

// VersionsOfMany lists the versions of several identities, by identity.
func (v *Vault) VersionsOfMany(ctx context.Context, ids []Identity) (map[Identity][]Version, error) {
	return v.store.VersionsOfMany(ctx, ids)
}

// VersionByKey finds the version holding an access key id (destroyed ones too). Errors: ErrNotFound.
func (v *Vault) VersionByKey(ctx context.Context, accessKeyID string) (Version, error) {
	return v.store.VersionByKey(ctx, accessKeyID)
}

// VersionsOf returns one identity's versions, oldest first, without secrets.
func (v *Vault) VersionsOf(ctx context.Context, id Identity) ([]Version, error) {
	return v.store.VersionsOf(ctx, id)
}

// Current returns the identity's current credential with its secret. Errors: ErrNotFound when there
// is none, ErrNoSecret when the key's secret is not held.
func (v *Vault) Current(ctx context.Context, id Identity) (Credential, error) {
	rec, err := v.store.CurrentVersion(ctx, id)
	if err != nil {
		return Credential{}, fmt.Errorf("current credential of %s: %w", id, err)
	}
	return v.reveal(ctx, rec)
}

// Reveal returns one version with its secret.
func (v *Vault) Reveal(ctx context.Context, id Identity, number int64) (Credential, error) {
	rec, err := v.store.Version(ctx, id, number)
	if err != nil {
		return Credential{}, fmt.Errorf("version %d of %s: %w", number, id, err)
	}
	return v.reveal(ctx, rec)
}

func (v *Vault) reveal(ctx context.Context, rec Record) (Credential, error) {
	if !rec.HasSecret {
		return Credential{}, fmt.Errorf("%s of %s (%s): %w", rec.AccessKeyID, rec.Identity, rec.State, ErrNoSecret)
	}
	plain, err := v.open(ctx, rec)
	if err != nil {
		return Credential{}, fmt.Errorf("decrypt %s of %s: %w", rec.AccessKeyID, rec.Identity, err)
	}
	return Credential{Version: rec.Version, SecretAccessKey: secret.New(string(plain))}, nil
}

// Promote makes a pending version current; the version that was current becomes previous.
func (v *Vault) Promote(ctx context.Context, id Identity, number int64) error {
	return v.transition(ctx, id, number, StatePending, StateCurrent)
}

// Deactivate records that a previous version was deactivated in the cloud.
func (v *Vault) Deactivate(ctx context.Context, id Identity, number int64) error {
	return v.transition(ctx, id, number, StatePrevious, StateInactive)
}

// Destroy records that a version's key is gone from the cloud and erases its secret for good
// (crypto-shredding): the wrapped data key and the ciphertext are deleted, the metadata is kept. A
// current version cannot be destroyed: something must replace it first.
func (v *Vault) Destroy(ctx context.Context, id Identity, number int64) error {
	rec, err := v.store.Version(ctx, id, number)
	if err != nil {
		return fmt.Errorf("destroy version %d of %s: %w", number, id, err)
	}
	if !slices.Contains([]State{StatePending, StatePrevious, StateInactive}, rec.State) {
		return fmt.Errorf("destroy version %d of %s: %w from %s", number, id, ErrInvalidTransition, rec.State)
	}
	return v.transition(ctx, id, number, rec.State, StateDestroyed)
}

func (v *Vault) transition(ctx context.Context, id Identity, number int64, from, to State) error {
	if err := v.store.Transition(ctx, id, number, from, to, v.now().UTC()); err != nil {
		return fmt.Errorf("move version %d of %s from %s to %s: %w", number, id, from, to, err)
	}
	return nil
}

// Lookup finds the one identity with a user name, in the given account or, when accountID is "", in
// any. Errors: ErrNotFound, ErrAmbiguous (the message lists the accounts).
func (v *Vault) Lookup(ctx context.Context, userName, accountID string) (Identity, error) {
	ids, err := v.store.Identities(ctx, userName, accountID)
	if err != nil {
		return Identity{}, err
	}
	switch len(ids) {
	case 0:
		if accountID != "" {
			return Identity{}, fmt.Errorf("no identity %q in account %s: %w", userName, accountID, ErrNotFound)
		}
		return Identity{}, fmt.Errorf("no identity %q: %w", userName, ErrNotFound)
	case 1:
		return ids[0], nil
	}
	accounts := make([]string, len(ids))
	for i, id := range ids {
		accounts[i] = id.AccountID
	}
	return Identity{}, fmt.Errorf("user %q exists in accounts %v: give the account: %w", userName, accounts, ErrAmbiguous)
}

// List returns every version's metadata, never a secret.
func (v *Vault) List(ctx context.Context) ([]Version, error) { return v.store.Versions(ctx) }

// Rewrap re-wraps every data key under next, without touching the secrets' ciphertexts: all are
// rewrapped, and within (when not nil: an audit record, say) run, in one transaction, or none.
// Afterwards the vault must be opened with next. progress may be nil. Not for inside a unit of work:
// it calls the KEKs before it writes.
func (v *Vault) Rewrap(ctx context.Context, next KEK, progress func(done, total int), within ...func(ctx context.Context, n int) error) (int, error) {
	if next.ID() == v.kek.ID() {
		return 0, fmt.Errorf("rewrap: the new key-encryption key is the one in use (%s)", next.ID())
	}
	rewrap := func(what string, ad, wrapped []byte, kekID string) (string, []byte, error) {
		if kekID != v.kek.ID() {
			return "", nil, fmt.Errorf("%s: %w (%s)", what, ErrKEKMismatch, kekID)
		}
		dek, err := v.kek.Unwrap(ctx, wrapped, ad)
		if err != nil {
			return "", nil, fmt.Errorf("unwrap data key of %s: %w", what, err)
		}
		defer clear(dek)
		rewrapped, err := next.Wrap(ctx, dek, ad)
		if err != nil {
			return "", nil, fmt.Errorf("wrap data key of %s: %w", what, err)
		}
		return next.ID(), rewrapped, nil
	}
	n, err := v.store.Rewrap(ctx, func(rec Record) (string, []byte, error) {
		return rewrap(fmt.Sprintf("version %d of %s", rec.Number, rec.Identity), versionWrapAD(rec),
			rec.Sealed.WrappedKey, rec.Sealed.KEKID)
	}, func(key SealedSigningKey) (string, []byte, error) {
		return rewrap("signing key "+key.ID, signingKeyAAD(key.Purpose, key.ID), key.Sealed.WrappedKey, key.Sealed.KEKID)
	}, func(name string, s Sealed) (string, []byte, error) {
		return rewrap("sealed blob "+name, blobAAD(name), s.WrappedKey, s.KEKID)
	}, progress, func(ctx context.Context, n int) error {
		for _, fn := range within {
			if err := fn(ctx, n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("rewrap: %w", err)
	}
	v.kek = next
	return n, nil
}

// sealBytes encrypts plaintext under a fresh data key wrapped by the KEK, with ad bound into both
// (formatBound: for what is named before its transaction, blobs and signing keys). It calls the KEK:
// never while a write transaction is open.
func (v *Vault) sealBytes(ctx context.Context, ad, plaintext []byte) (Sealed, error) {
	k, err := v.newDataKey(ctx, ad)
	if err != nil {
		return Sealed{}, err
	}
	defer clear(k.plain)
	return k.seal(formatBound, ad, plaintext)
}

// versionWrapAD is the associated data a version's data key was wrapped with, by its format.
func versionWrapAD(rec Record) []byte {
	if ct := rec.Sealed.Ciphertext; len(ct) > 0 && ct[0] == formatPrepared {
		return versionWrapAAD(rec.Identity, rec.AccessKeyID)
	}
	return aad(rec.Identity, rec.Number, rec.AccessKeyID)
}

func (v *Vault) open(ctx context.Context, rec Record) ([]byte, error) {
	return v.openSealed(ctx, versionWrapAD(rec), aad(rec.Identity, rec.Number, rec.AccessKeyID), rec.Sealed)
}

// openBytes reverses sealBytes.
func (v *Vault) openBytes(ctx context.Context, ad []byte, sealed Sealed) ([]byte, error) {
	if ct := sealed.Ciphertext; len(ct) > 0 && ct[0] != formatBound {
		return nil, errors.New("unknown ciphertext format")
	}
	return v.openSealed(ctx, ad, ad, sealed)
}

// openSealed unwraps sealed's data key under wrapAD and opens its ciphertext under ad.
func (v *Vault) openSealed(ctx context.Context, wrapAD, ad []byte, sealed Sealed) ([]byte, error) {
	if sealed.KEKID != v.kek.ID() {
		return nil, fmt.Errorf("%w (%s, configured %s)", ErrKEKMismatch, sealed.KEKID, v.kek.ID())
	}
	ct := sealed.Ciphertext
	if len(ct) == 0 || (ct[0] != formatBound && ct[0] != formatPrepared) {
		return nil, errors.New("unknown ciphertext format")
	}
	dek, err := v.kek.Unwrap(ctx, sealed.WrappedKey, wrapAD)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key: %w", err)
	}
	defer clear(dek)
	aead, err := newAEAD(dek)
	if err != nil {
		return nil, err
	}
	return openAEAD(aead, ct[1:], ad)
}
