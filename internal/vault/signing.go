package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Purposes of Keyward's own signing keys.
const (
	PurposeAudit = "audit" // signs the audit trail's checkpoints
)

// SealedSigningKey is a signing key as a Store keeps it: the public half in the clear, the private
// half (an Ed25519 seed) sealed under the KEK like a secret.
type SealedSigningKey struct {
	ID        string
	Purpose   string
	Public    ed25519.PublicKey
	Sealed    Sealed
	CreatedAt time.Time
}

// SigningKey is one of Keyward's own Ed25519 keys, opened. Its private half never leaves the process
// and prints as nothing.
type SigningKey struct {
	ID        string
	Purpose   string
	Public    ed25519.PublicKey
	CreatedAt time.Time
	private   ed25519.PrivateKey
}

// KeyID returns the key's id.
func (k SigningKey) KeyID() string { return k.ID }

// Sign signs msg.
func (k SigningKey) Sign(msg []byte) []byte { return ed25519.Sign(k.private, msg) }

// Signer returns the key as a crypto.Signer, for libraries that sign with one (JWTs).
func (k SigningKey) Signer() crypto.Signer { return k.private }

// String names the key without its private half.
func (k SigningKey) String() string { return k.ID }

// signingKeyID names a key by its purpose and the fingerprint of its public half.
func signingKeyID(purpose string, pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return purpose + ":" + hex.EncodeToString(sum[:8])
}

func signingKeyAAD(purpose, id string) []byte {
	return []byte("keyward/v1|signing-key|" + purpose + "|" + id)
}

// SigningKey returns the newest signing key for purpose, creating one when there is none.
func (v *Vault) SigningKey(ctx context.Context, purpose string) (SigningKey, error) {
	keys, err := v.SigningKeys(ctx, purpose)
	if err != nil {
		return SigningKey{}, err
	}
	if len(keys) > 0 {
		return keys[len(keys)-1], nil
	}
	return v.NewSigningKey(ctx, purpose)
}

// NewSigningKey makes and stores a new signing key for purpose: it becomes the newest, the one
// SigningKey returns; the older ones stay, for what they signed to be checked.
func (v *Vault) NewSigningKey(ctx context.Context, purpose string) (SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return SigningKey{}, fmt.Errorf("generate %s signing key: %w", purpose, err)
	}
	id := signingKeyID(purpose, pub)
	seed := priv.Seed()
	defer clear(seed)
	sealed, err := v.sealBytes(ctx, signingKeyAAD(purpose, id), seed)
	if err != nil {
		return SigningKey{}, fmt.Errorf("seal %s signing key: %w", purpose, err)
	}
	now := v.now().UTC()
	if err := v.store.CreateSigningKey(ctx, SealedSigningKey{ID: id, Purpose: purpose, Public: pub, Sealed: sealed, CreatedAt: now}); err != nil {
		return SigningKey{}, fmt.Errorf("store %s signing key: %w", purpose, err)
	}
	return SigningKey{ID: id, Purpose: purpose, Public: pub, CreatedAt: now, private: priv}, nil
}

// SigningKeys returns every signing key for purpose, oldest first, opened (a call to the KEK each).
// A key whose sealed half does not open, or does not match its public half, is an error: it was
// tampered with.
func (v *Vault) SigningKeys(ctx context.Context, purpose string) ([]SigningKey, error) {
	sealed, err := v.store.SigningKeys(ctx, purpose)
	if err != nil {
		return nil, fmt.Errorf("%s signing keys: %w", purpose, err)
	}
	keys := make([]SigningKey, 0, len(sealed))
	for _, s := range sealed {
		k, err := v.openSigningKey(ctx, s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// PublicSigningKeys returns every signing key for purpose, oldest first, with its public half only:
// what checking signatures needs, read without a call to the KEK. Such a key cannot sign.
func (v *Vault) PublicSigningKeys(ctx context.Context, purpose string) ([]SigningKey, error) {
	return PublicSigningKeysOf(ctx, v.store, purpose)
}

// PublicSigningKeysOf is PublicSigningKeys read straight from a store, for what has no KEK at hand (a
// copy of the vault into another database checking its trail).
func PublicSigningKeysOf(ctx context.Context, st Store, purpose string) ([]SigningKey, error) {
	sealed, err := st.SigningKeys(ctx, purpose)
	if err != nil {
		return nil, fmt.Errorf("%s signing keys: %w", purpose, err)
	}
	keys := make([]SigningKey, 0, len(sealed))
	for _, s := range sealed {
		if signingKeyID(s.Purpose, s.Public) != s.ID {
			return nil, fmt.Errorf("signing key %s: its id does not match its public half", s.ID)
		}
		keys = append(keys, SigningKey{ID: s.ID, Purpose: s.Purpose, Public: s.Public, CreatedAt: s.CreatedAt})
	}
	return keys, nil
}

// PublicKeys are the keys' public halves by id, as checking a signature wants them.
func PublicKeys(keys []SigningKey) map[string]ed25519.PublicKey {
	pub := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		pub[k.ID] = k.Public
	}
	return pub
}

// OpenSigningKey returns one signing key for purpose by id, opened (one call to the KEK).
// ErrNotFound when there is none.
func (v *Vault) OpenSigningKey(ctx context.Context, purpose, id string) (SigningKey, error) {
	sealed, err := v.store.SigningKeys(ctx, purpose)
	if err != nil {
		return SigningKey{}, fmt.Errorf("%s signing keys: %w", purpose, err)
	}
	for _, s := range sealed {
		if s.ID == id {
			return v.openSigningKey(ctx, s)
		}
	}
	return SigningKey{}, fmt.Errorf("signing key %s: %w", id, ErrNotFound)
}

func (v *Vault) openSigningKey(ctx context.Context, s SealedSigningKey) (SigningKey, error) {
	seed, err := v.openBytes(ctx, signingKeyAAD(s.Purpose, s.ID), s.Sealed)
	if err != nil {
		return SigningKey{}, fmt.Errorf("open signing key %s: %w", s.ID, err)
	}
	if len(seed) != ed25519.SeedSize {
		return SigningKey{}, fmt.Errorf("signing key %s: %w", s.ID, errors.New("bad seed length"))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	pub := priv.Public().(ed25519.PublicKey)
	if !bytes.Equal(pub, s.Public) || signingKeyID(s.Purpose, pub) != s.ID {
		return SigningKey{}, fmt.Errorf("signing key %s: its public half does not match its private half", s.ID)
	}
	return SigningKey{ID: s.ID, Purpose: s.Purpose, Public: pub, CreatedAt: s.CreatedAt, private: priv}, nil
}

// CanSign says whether the key holds its private half.
func (k SigningKey) CanSign() bool { return k.private != nil }
