package store

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/vault"
)

// TestAssign: the committer's rows scan into what the store scans into, as database/sql would.
func TestAssign(t *testing.T) {
	var (
		s   string
		b   []byte
		i64 int64
		i   int
		ok  bool
		st  vault.State
		ns  sql.NullString
		ni  sql.NullInt64
	)
	src := []byte("bytes")
	for _, c := range []struct {
		dest any
		v    any
		want func() bool
	}{
		{&s, "text", func() bool { return s == "text" }},
		{&s, []byte("raw"), func() bool { return s == "raw" }},
		{&b, src, func() bool { return string(b) == "bytes" && &b[0] != &src[0] }}, // a copy
		{&b, nil, func() bool { return b == nil }},
		{&i64, int64(-7), func() bool { return i64 == -7 }},
		{&i, int64(42), func() bool { return i == 42 }},
		{&ok, int64(1), func() bool { return ok }},
		{&st, "current", func() bool { return st == vault.StateCurrent }},
		{&ns, nil, func() bool { return !ns.Valid }},
		{&ns, "x", func() bool { return ns.Valid && ns.String == "x" }},
		{&ni, int64(9), func() bool { return ni.Valid && ni.Int64 == 9 }},
	} {
		if err := assign(c.dest, c.v); err != nil || !c.want() {
			t.Errorf("assign(%T, %#v): %v", c.dest, c.v, err)
		}
	}
	if err := assign(&i64, "not a number"); err == nil || !strings.Contains(err.Error(), "cannot store string into *int64") {
		t.Errorf("assign of a string to an int64: %v", err)
	}
	if err := assign(&s, nil); err == nil {
		t.Error("assign of NULL to a string succeeded")
	}
}
