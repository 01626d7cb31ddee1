// Package secret holds the one type Keyward uses for secret material (secret access keys, passwords,
// DSNs with credentials). Every way Go has of printing a value — fmt verbs, log/slog, encoding/json,
// YAML — prints "[redacted]", so a careless log line or error message cannot leak one. The only way
// to the plaintext is Reveal, which is easy to search for in review.
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints in place of its content.
const Redacted = "[redacted]"

// Value is a piece of secret material. The zero Value is empty.
type Value struct {
	s string
}

// New wraps plaintext as a Value.
func New(plaintext string) Value { return Value{s: plaintext} }

// Reveal returns the plaintext. Call it only where the secret must leave the process on purpose:
// encryption, signing a request, or printing a credential to its owner.
func (v Value) Reveal() string { return v.s }

// IsZero reports whether v is empty.
func (v Value) IsZero() bool { return v.s == "" }

// Equal reports whether v and o hold the same secret.
func (v Value) Equal(o Value) bool { return v.s == o.s }

// String implements fmt.Stringer.
func (Value) String() string { return Redacted }

// GoString implements fmt.GoStringer, for %#v.
func (Value) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb (%s %v %q %x %d…) prints the placeholder.
func (Value) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue implements slog.LogValuer.
func (Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (Value) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler, used by encoders that fall back to text.
func (Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// MarshalYAML implements yaml.Marshaler.
func (Value) MarshalYAML() (any, error) { return Redacted, nil }

// UnmarshalYAML implements yaml.Unmarshaler so configuration files can hold a Value.
func (v *Value) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v.s = s
	return nil
}
