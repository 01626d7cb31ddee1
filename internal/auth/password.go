package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/keyward/keyward/internal/secret"
)

// Argon2Params are Argon2id's cost parameters. The defaults are OWASP's (19 MiB, 2 passes, 1 lane).
type Argon2Params struct {
	MemoryKiB   uint32 `yaml:"memory_kib"`
	Iterations  uint32 `yaml:"iterations"`
	Parallelism uint8  `yaml:"parallelism"`
}

// DefaultArgon2 are the parameters used when the configuration says nothing.
var DefaultArgon2 = Argon2Params{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1}

// Validate checks the parameters against Argon2's limits and a sane floor.
func (p Argon2Params) Validate() error {
	switch {
	case p.MemoryKiB < 8*uint32(max(p.Parallelism, 1)) || p.MemoryKiB > 4*1024*1024:
		return fmt.Errorf("memory_kib %d: want 8×parallelism to 4194304", p.MemoryKiB)
	case p.Iterations < 1 || p.Iterations > 100:
		return fmt.Errorf("iterations %d: want 1 to 100", p.Iterations)
	case p.Parallelism < 1:
		return fmt.Errorf("parallelism %d: want 1 to 255", p.Parallelism)
	}
	return nil
}

const minPasswordLen = 12

// CheckPassword rejects passwords too short to be worth hashing.
func CheckPassword(pw secret.Value) error {
	if n := len([]rune(pw.Reveal())); n < minPasswordLen {
		return invalid("password: want at least %d characters (got %d)", minPasswordLen, n)
	}
	if len(pw.Reveal()) > 1024 {
		return invalid("password: want at most 1024 bytes")
	}
	return nil
}

// HashPassword returns the PHC string of an Argon2id hash of pw with a random salt.
func HashPassword(pw secret.Value, p Argon2Params) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	sum := argon2.IDKey([]byte(pw.Reveal()), salt, p.Iterations, p.MemoryKiB, p.Parallelism, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

// VerifyPassword says whether pw matches a PHC string made by HashPassword, in constant time for a
// given hash. A malformed hash matches nothing.
func VerifyPassword(pw secret.Value, phc string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Iterations, &p.Parallelism); err != nil || p.Validate() != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) < 16 {
		return false
	}
	got := argon2.IDKey([]byte(pw.Reveal()), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}
