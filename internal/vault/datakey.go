package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/internal/secret"
)

// Ciphertext formats: the first byte of every sealed ciphertext.
//
//   - formatBound (1): the data key is wrapped with the same associated data as the ciphertext. For
//     a version that holds its number, known only inside the transaction that takes it, so the KEK
//     (perhaps AWS KMS) had to be called inside that transaction. Still read; written for blobs and
//     signing keys, whose associated data is known beforehand.
//   - formatPrepared (2): a version's data key is wrapped with the identity and the access key id
//     only (versionWrapAAD), before the transaction; the ciphertext binds the number too (aad). So
//     the KEK is called outside every write transaction, and the number is still bound locally.
const (
	formatBound    = 1
	formatPrepared = 2
)

// versionWrapAAD is the associated data a version's data key is wrapped with in formatPrepared.
func versionWrapAAD(id Identity, accessKeyID string) []byte {
	return []byte("keyward/v2|version-key|" + id.Cloud + "|" + id.AccountID + "|" + id.UserName + "|" + accessKeyID)
}

// dataKey is a fresh data key in the clear and wrapped by the KEK under wrapAD.
type dataKey struct {
	plain, wrapped []byte
	kekID          string
}

// newDataKey makes a data key: the one call to the KEK a seal needs. Never call it while a write
// transaction is open (the KEK may be a network service).
func (v *Vault) newDataKey(ctx context.Context, wrapAD []byte) (dataKey, error) {
	var k dataKey
	var err error
	if gen, ok := v.kek.(DataKeyGenerator); ok {
		k.plain, k.wrapped, err = gen.GenerateDataKey(ctx, wrapAD)
	} else {
		k.plain = randomBytes(32)
		k.wrapped, err = v.kek.Wrap(ctx, k.plain, wrapAD)
	}
	if err != nil {
		return dataKey{}, fmt.Errorf("data key: %w", err)
	}
	k.kekID = v.kek.ID()
	return k, nil
}

// seal encrypts plaintext under the data key with ad bound in, as format; it calls nothing.
func (k dataKey) seal(format byte, ad, plaintext []byte) (Sealed, error) {
	if k.plain == nil {
		return Sealed{}, errors.New("data key already cleared")
	}
	aead, err := newAEAD(k.plain)
	if err != nil {
		return Sealed{}, err
	}
	ct, err := sealAEAD(aead, plaintext, ad)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{KEKID: k.kekID, WrappedKey: k.wrapped, Ciphertext: append([]byte{format}, ct...)}, nil
}

// Prepared is a secret made ready to be stored, before the transaction that stores it: its data key
// is made — by the KEK, which may be AWS KMS — so that storing it (AddPending, Import) calls nothing
// outside the database. No KMS call happens while a write transaction holds the database. Clear it
// once stored.
type Prepared struct {
	id          Identity
	accessKeyID string
	secret      secret.Value
	key         dataKey
}

// Prepare validates a key and its secret and makes the data key that will seal it.
func (v *Vault) Prepare(ctx context.Context, id Identity, accessKeyID string, s secret.Value) (*Prepared, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateAccessKeyID(accessKeyID); err != nil {
		return nil, err
	}
	if err := ValidateSecret(s); err != nil {
		return nil, err
	}
	k, err := v.newDataKey(ctx, versionWrapAAD(id, accessKeyID))
	if err != nil {
		return nil, fmt.Errorf("seal %s for %s: %w", accessKeyID, id, err)
	}
	return &Prepared{id: id, accessKeyID: accessKeyID, secret: s, key: k}, nil
}

// AccessKeyID is the prepared key's id.
func (p *Prepared) AccessKeyID() string { return p.accessKeyID }

// sealAs seals the secret as version number of its identity.
func (p *Prepared) sealAs(number int64) (Sealed, error) {
	sealed, err := p.key.seal(formatPrepared, aad(p.id, number, p.accessKeyID), []byte(p.secret.Reveal()))
	if err != nil {
		return Sealed{}, fmt.Errorf("seal %s for %s: %w", p.accessKeyID, p.id, err)
	}
	return sealed, nil
}

// Clear wipes the data key from memory.
func (p *Prepared) Clear() {
	clear(p.key.plain)
	p.key.plain = nil
}
