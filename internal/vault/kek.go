package vault

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/keyward/keyward/internal/secret"
)

// KEK is a key-encryption key: it wraps and unwraps the per-version data keys. aad is bound into
// the wrapping so a wrapped key cannot be moved to another version.
type KEK interface {
	// ID names the KEK, without revealing it, so records can say which KEK wrapped them.
	ID() string
	Wrap(ctx context.Context, dataKey, aad []byte) ([]byte, error)
	Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error)
}

// DataKeyGenerator is a KEK that makes data keys itself (AWS KMS GenerateDataKey), returning the
// plaintext key and its wrapped form in one call.
type DataKeyGenerator interface {
	GenerateDataKey(ctx context.Context, aad []byte) (plaintext, wrapped []byte, err error)
}

// LocalKEK is a 256-bit key held in process memory, read from a file or an environment variable.
type LocalKEK struct {
	id   string
	aead cipher.AEAD
}

// NewLocalKEK makes a KEK from the base64 of 32 bytes. The same key gives the same id whether it
// comes from a file or a variable, so moving it between the two needs no rewrap.
func NewLocalKEK(encoded secret.Value) (*LocalKEK, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded.Reveal()))
	if err != nil {
		return nil, errors.New("key-encryption key is not valid base64")
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("key-encryption key must be 32 bytes, is %d", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	// The id is a keyed fingerprint: it tells KEKs apart and says nothing about the key.
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte("keyward kek id"))
	return &LocalKEK{id: "local:" + hex.EncodeToString(mac.Sum(nil)[:8]), aead: aead}, nil
}

// ID implements KEK.
func (k *LocalKEK) ID() string { return k.id }

// Wrap implements KEK: nonce || AES-256-GCM(dataKey).
func (k *LocalKEK) Wrap(_ context.Context, dataKey, aad []byte) ([]byte, error) {
	return sealAEAD(k.aead, dataKey, aad)
}

// Unwrap implements KEK.
func (k *LocalKEK) Unwrap(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	return openAEAD(k.aead, wrapped, aad)
}

// GenerateKeyMaterial returns the base64 of 32 random bytes, the form key files and variables hold.
func GenerateKeyMaterial() secret.Value {
	return secret.New(base64.StdEncoding.EncodeToString(randomBytes(32)))
}

// ReadKeyFile loads a LocalKEK from a key file. A missing file is an error wrapping fs.ErrNotExist;
// warn is called when the file can be read by others than its owner.
func ReadKeyFile(path string, warn func(msg string, args ...any)) (*LocalKEK, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key file: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 && warn != nil {
		warn("key-encryption key file is readable by group or others; chmod 600 it", "path", path, "mode", info.Mode().Perm().String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key file: %w", err)
	}
	k, err := NewLocalKEK(secret.New(string(data)))
	if err != nil {
		return nil, fmt.Errorf("key-encryption key file %s: %w", path, err)
	}
	return k, nil
}

// CreateKeyFile writes a new random KEK to path with mode 0600, failing if the file exists.
func CreateKeyFile(path string) (*LocalKEK, error) {
	material := GenerateKeyMaterial()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key-encryption key file: %w", err)
	}
	if _, err := f.WriteString(material.Reveal() + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write key-encryption key file: %w", err)
	}
	// The key must be on disk before anything is encrypted under it.
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("sync key-encryption key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close key-encryption key file: %w", err)
	}
	return NewLocalKEK(material)
}

// OpenKeyFile reads the KEK at path, creating it when it is missing and the store holds no data key
// wrapped by another KEK (creating one then would hide a lost key file behind a fresh, useless one).
// created reports whether the file was made now.
func OpenKeyFile(ctx context.Context, path string, st Store, warn func(msg string, args ...any)) (k *LocalKEK, created bool, err error) {
	k, err = ReadKeyFile(path, warn)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	ids, err := st.KEKIDs(ctx)
	if err != nil {
		return nil, false, err
	}
	if len(ids) > 0 {
		return nil, false, fmt.Errorf("key-encryption key file %s is missing, but the vault holds data keys wrapped by %s: restore the file (or point vault.master_key.file at it)", path, strings.Join(ids, ", "))
	}
	k, err = CreateKeyFile(path)
	return k, err == nil, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never returns an error on supported platforms
	}
	return b
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealAEAD returns nonce || ciphertext.
func sealAEAD(aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	nonce := randomBytes(aead.NonceSize())
	return aead.Seal(nonce, nonce, plaintext, aad), nil
}

func openAEAD(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(sealed) < n+aead.Overhead() {
		return nil, errors.New("sealed data too short")
	}
	out, err := aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, errors.New("message authentication failed")
	}
	return out, nil
}
