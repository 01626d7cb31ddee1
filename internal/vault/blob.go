package vault

import (
	"context"
	"fmt"
)

// Sealed blobs are the small secrets Keyward keeps for itself besides cloud keys and signing keys
// (users' TOTP seeds): sealed under the KEK like a credential's secret, their name bound into the
// ciphertext so that a blob copied under another name does not open.

func blobAAD(name string) []byte { return []byte("keyward/v1|blob|" + name) }

// SealBlob seals plaintext and stores it under name, replacing what was there. It calls the KEK, so
// it is not for inside a write transaction: there, seal first (SealedBlob) and store with PutBlob.
func (v *Vault) SealBlob(ctx context.Context, name string, plaintext []byte) error {
	sealed, err := v.SealedBlob(ctx, name, plaintext)
	if err != nil {
		return err
	}
	return v.PutBlob(ctx, name, sealed)
}

// SealedBlob seals plaintext as the blob name, to be stored by PutBlob (in a transaction, say).
func (v *Vault) SealedBlob(ctx context.Context, name string, plaintext []byte) (Sealed, error) {
	sealed, err := v.sealBytes(ctx, blobAAD(name), plaintext)
	if err != nil {
		return Sealed{}, fmt.Errorf("seal %s: %w", name, err)
	}
	return sealed, nil
}

// PutBlob stores a blob SealedBlob sealed under name, replacing what was there. Inside a unit of
// work (Store.Atomically) it commits with it; it calls nothing but the database.
func (v *Vault) PutBlob(ctx context.Context, name string, sealed Sealed) error {
	if err := v.store.PutBlob(ctx, name, sealed, v.now().UTC()); err != nil {
		return fmt.Errorf("store %s: %w", name, err)
	}
	return nil
}

// OpenBlob returns the plaintext of the blob stored under name. Errors: ErrNotFound. The caller
// clears the plaintext when done with it.
func (v *Vault) OpenBlob(ctx context.Context, name string) ([]byte, error) {
	sealed, err := v.store.Blob(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	plain, err := v.openBytes(ctx, blobAAD(name), sealed)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return plain, nil
}

// DeleteBlob removes the blob stored under name.
func (v *Vault) DeleteBlob(ctx context.Context, name string) error {
	return v.store.DeleteBlob(ctx, name)
}
