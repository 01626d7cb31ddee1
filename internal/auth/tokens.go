package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keyward/keyward/internal/vault"
)

// PurposeToken is the purpose of the vault's signing keys that sign Keyward's tokens.
const PurposeToken = "token"

// TokenKeys is where the token signing keys live: the vault, which keeps their private halves sealed.
// Checking a token needs the public halves only; signing one needs the newest key opened, which
// calls the KEK (perhaps AWS KMS), so it is opened once and kept until a newer key takes over.
type TokenKeys interface {
	PublicSigningKeys(ctx context.Context, purpose string) ([]vault.SigningKey, error)
	OpenSigningKey(ctx context.Context, purpose, id string) (vault.SigningKey, error)
	NewSigningKey(ctx context.Context, purpose string) (vault.SigningKey, error)
}

// Claims are a Keyward token's claims.
type Claims struct {
	jwt.RegisteredClaims
	// Generation is the principal's token generation at issue: logout and disabling move it on.
	Generation int64 `json:"gen"`
	// MFA: a second factor was given at login.
	MFA bool `json:"mfa,omitempty"`
}

// Tokens issues and checks Keyward's tokens: JWTs signed with EdDSA (Ed25519) by a key from the
// vault, replaced every KeyRotation; the keys still needed to check tokens are published as a JWKS.
type Tokens struct {
	keys        TokenKeys
	issuer      string
	audience    string
	ttl         time.Duration
	keyRotation time.Duration
	now         func() time.Time
	parser      *jwt.Parser

	mu       sync.RWMutex
	loaded   []vault.SigningKey // oldest first, public halves only
	byID     map[string]vault.SigningKey
	loadedAt time.Time
	private  vault.SigningKey // the newest key, opened (zero until first needed)

	// opening makes concurrent openings of one key one call to the KEK.
	opening singleflight.Group

	verified verifiedTokens
}

// verifiedTokens remembers, by their SHA-256, tokens whose signature has been checked, so that a client
// presenting the same token again costs a map lookup instead of an Ed25519 verification (a sixth of a
// credential read's CPU). Only the signature check is spared: expiry, not-before and that the signing
// key is still live are checked on every use, and the principal is read afresh by Authenticate.
type verifiedTokens struct {
	once sync.Once
	c    *lru.Cache[[sha256.Size]byte, verifiedToken] // bounded: the least recently used go first
}

func (v *verifiedTokens) cache() *lru.Cache[[sha256.Size]byte, verifiedToken] {
	v.once.Do(func() { v.c, _ = lru.New[[sha256.Size]byte, verifiedToken](maxVerifiedTokens) })
	return v.c
}

type verifiedToken struct {
	claims Claims
	kid    string
}

// expired reports whether the token's lifetime is over at now (the parser's bound: exp excluded).
func (v verifiedToken) expired(now time.Time) bool { return !now.Before(v.claims.ExpiresAt.Time) }

// maxVerifiedTokens bounds the memory remembered tokens take (a few hundred bytes each).
const maxVerifiedTokens = 10_000

// NewTokens returns the token service. ttl is a token's lifetime; keyRotation how long a signing key
// signs before a new one takes over.
func NewTokens(keys TokenKeys, issuer, audience string, ttl, keyRotation time.Duration, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	// One parser for every token (it is read-only once made): EdDSA only; issuer, audience, expiry and
	// not-before all required.
	parser := jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithIssuer(issuer),
		jwt.WithAudience(audience), jwt.WithExpirationRequired(), jwt.WithNotBeforeRequired(), jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding())
	return &Tokens{keys: keys, issuer: issuer, audience: audience, ttl: ttl, keyRotation: keyRotation, now: now, parser: parser}
}

// TTL is a token's lifetime.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// reloadEvery bounds how often a token naming an unknown key makes Tokens read the keys again.
const reloadEvery = 5 * time.Second

// load reads the signing keys from the vault (at most every reloadEvery unless force).
func (t *Tokens) load(ctx context.Context, force bool) error {
	t.mu.RLock()
	fresh := t.loaded != nil && t.now().Sub(t.loadedAt) < reloadEvery
	t.mu.RUnlock()
	if fresh && !force {
		return nil
	}
	keys, err := t.keys.PublicSigningKeys(ctx, PurposeToken)
	if err != nil {
		return fmt.Errorf("token signing keys: %w", err)
	}
	byID := make(map[string]vault.SigningKey, len(keys))
	for _, k := range keys {
		byID[k.ID] = k
	}
	t.mu.Lock()
	t.loaded, t.byID, t.loadedAt = keys, byID, t.now()
	t.mu.Unlock()
	return nil
}

// signer returns the newest signing key, opened, making a new one when there is none or it is due.
// The opened key is kept until a newer one takes over: the KEK is called once per key, and
// concurrent callers share that call.
func (t *Tokens) signer(ctx context.Context) (vault.SigningKey, error) {
	newest, err := t.newest(ctx)
	if err != nil {
		return vault.SigningKey{}, err
	}
	if newest.ID == "" || t.now().Sub(newest.CreatedAt) >= t.keyRotation {
		if err := t.Rotate(ctx); err != nil {
			return vault.SigningKey{}, err
		}
		if newest, err = t.newest(ctx); err != nil {
			return vault.SigningKey{}, err
		}
	}
	t.mu.RLock()
	cached := t.private
	t.mu.RUnlock()
	if cached.ID == newest.ID {
		return cached, nil
	}
	v, err, _ := t.opening.Do(newest.ID, func() (any, error) {
		k, err := t.keys.OpenSigningKey(ctx, PurposeToken, newest.ID)
		if err != nil {
			return nil, err
		}
		t.keep(k)
		return k, nil
	})
	if err != nil {
		return vault.SigningKey{}, fmt.Errorf("open token signing key: %w", err)
	}
	return v.(vault.SigningKey), nil
}

// newest returns the newest signing key's public half (zero when there is none).
func (t *Tokens) newest(ctx context.Context) (vault.SigningKey, error) {
	if err := t.load(ctx, false); err != nil {
		return vault.SigningKey{}, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if n := len(t.loaded); n > 0 {
		return t.loaded[n-1], nil
	}
	return vault.SigningKey{}, nil
}

// keep remembers an opened key as the one to sign with, unless a newer one is kept already.
func (t *Tokens) keep(k vault.SigningKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.private.ID == "" || !k.CreatedAt.Before(t.private.CreatedAt) {
		t.private = k
	}
}

// Rotate makes a new signing key if the newest is due (or there is none). Older keys keep checking
// the tokens they signed until those have expired.
func (t *Tokens) Rotate(ctx context.Context) error {
	if err := t.load(ctx, true); err != nil {
		return err
	}
	t.mu.RLock()
	due := len(t.loaded) == 0 || t.now().Sub(t.loaded[len(t.loaded)-1].CreatedAt) >= t.keyRotation
	t.mu.RUnlock()
	if !due {
		return nil
	}
	k, err := t.keys.NewSigningKey(ctx, PurposeToken)
	if err != nil {
		return fmt.Errorf("new token signing key: %w", err)
	}
	t.keep(k)
	return t.load(ctx, true)
}

// live reports whether key i of keys may still have signed an unexpired token: it is the newest, or
// its successor took over less than one token lifetime ago.
func (t *Tokens) live(keys []vault.SigningKey, i int) bool {
	return i == len(keys)-1 || t.now().Sub(keys[i+1].CreatedAt) <= t.ttl
}

// Issue signs a token for a principal (sub: its id) at its current generation.
func (t *Tokens) Issue(ctx context.Context, subject string, generation int64, mfa bool) (string, time.Time, error) {
	key, err := t.signer(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	now := t.now().UTC().Truncate(time.Second)
	exp := now.Add(t.ttl)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: t.issuer, Subject: subject, Audience: jwt.ClaimStrings{t.audience},
			ExpiresAt: jwt.NewNumericDate(exp), NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now),
			ID: hex.EncodeToString(jti),
		},
		Generation: generation, MFA: mfa,
	})
	tok.Header["kid"] = key.ID
	signed, err := tok.SignedString(key.Signer())
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// Parse checks a token — signature by a live key of ours (EdDSA only), issuer, audience, expiry and
// not-before, all required, with no leeway: Keyward checks its own tokens on its own clock — and
// returns its claims. Any failure is ErrUnauthenticated (the reason is wrapped for logs).
func (t *Tokens) Parse(ctx context.Context, token string) (Claims, error) {
	sum := sha256.Sum256([]byte(token))
	if claims, ok := t.remembered(sum); ok {
		return claims, nil
	}
	var claims Claims
	var kid string
	_, err := t.parser.ParseWithClaims(token, &claims, func(tok *jwt.Token) (any, error) {
		kid, _ = tok.Header["kid"].(string)
		key, ok := t.key(kid)
		if !ok {
			// Perhaps a key another replica made a moment ago.
			if err := t.load(ctx, false); err != nil {
				return nil, err
			}
			if key, ok = t.key(kid); !ok {
				return nil, errors.New("unknown signing key")
			}
		}
		return key, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: token: %v", ErrUnauthenticated, err)
	}
	if claims.Subject == "" {
		return Claims{}, fmt.Errorf("%w: token without subject", ErrUnauthenticated)
	}
	t.remember(sum, verifiedToken{claims: claims, kid: kid})
	return claims, nil
}

// remembered returns the claims of a token verified before, if it is still within its validity
// (the same bounds as the parser's, with no leeway) and its signing key is still live.
func (t *Tokens) remembered(sum [sha256.Size]byte) (Claims, bool) {
	v, ok := t.verified.cache().Get(sum)
	if !ok {
		return Claims{}, false
	}
	now := t.now()
	if v.expired(now) || now.Before(v.claims.NotBefore.Time) {
		t.forget(sum)
		return Claims{}, false
	}
	if _, live := t.key(v.kid); !live {
		t.forget(sum)
		return Claims{}, false
	}
	return v.claims, true
}

// remember keeps a verified token's claims; when the memory is full, the least recently used goes
// (it is verified again on its next use).
func (t *Tokens) remember(sum [sha256.Size]byte, v verifiedToken) { t.verified.cache().Add(sum, v) }

func (t *Tokens) forget(sum [sha256.Size]byte) { t.verified.cache().Remove(sum) }

// key returns the public half of a live signing key by id.
func (t *Tokens) key(kid string) (ed25519.PublicKey, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i, k := range t.loaded {
		if k.ID == kid {
			return k.Public, t.live(t.loaded, i)
		}
	}
	return nil, false
}

// JWKS returns the JSON Web Key Set of the live signing keys' public halves (RFC 8037 OKP keys).
func (t *Tokens) JWKS(ctx context.Context) ([]byte, error) {
	if _, err := t.signer(ctx); err != nil {
		return nil, err
	}
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	t.mu.RLock()
	for i, k := range t.loaded {
		if t.live(t.loaded, i) {
			set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public),
				Kid: k.ID, Alg: "EdDSA", Use: "sig"})
		}
	}
	t.mu.RUnlock()
	return json.Marshal(set)
}

// Ready says whether tokens can be signed now: the newest signing key is opened (once; it is kept)
// — a KEK that cannot be reached makes this fail, and readiness with it.
func (t *Tokens) Ready(ctx context.Context) error {
	_, err := t.signer(ctx)
	return err
}
