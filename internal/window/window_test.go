package window_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/window"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func schedule(t *testing.T, windows []string, blackouts ...string) window.Schedule {
	t.Helper()
	var s window.Schedule
	for _, w := range windows {
		p, err := window.Parse(w)
		if err != nil {
			t.Fatal(err)
		}
		s.Windows = append(s.Windows, p)
	}
	for _, b := range blackouts {
		p, err := window.ParseBlackout(b)
		if err != nil {
			t.Fatal(err)
		}
		s.Blackouts = append(s.Blackouts, p)
	}
	return s
}

// TestNext: a step due inside a window happens at once; outside, at the next window's start in the
// owner's zone, across a weekend, a daylight-saving change (Europe/Berlin moves to summer time on
// 2027-03-28) and a December freeze.
func TestNext(t *testing.T) {
	office := []string{"Mon-Fri 09:00-16:00 Europe/Berlin"}
	for _, tc := range []struct {
		name      string
		s         window.Schedule
		from, got string
	}{
		{"inside", schedule(t, office), "2026-12-09T10:00:00+01:00", "2026-12-09T10:00:00+01:00"},
		{"after hours", schedule(t, office), "2026-12-09T16:30:00+01:00", "2026-12-10T09:00:00+01:00"},
		{"at the end", schedule(t, office), "2026-12-09T16:00:00+01:00", "2026-12-10T09:00:00+01:00"},
		{"weekend", schedule(t, office), "2026-12-12T11:00:00+01:00", "2026-12-14T09:00:00+01:00"},
		{"summer time begins", schedule(t, office), "2027-03-26T17:00:00+01:00", "2027-03-29T09:00:00+02:00"},
		{"summer time ends", schedule(t, office), "2027-10-29T17:00:00+02:00", "2027-11-01T09:00:00+01:00"},
		{"freeze", schedule(t, office, "2026-12-24..2027-01-02 Europe/Berlin"), "2026-12-23T16:30:00+01:00", "2027-01-04T09:00:00+01:00"},
		{"before the freeze", schedule(t, office, "2026-12-24..2027-01-02 Europe/Berlin"), "2026-12-23T15:30:00+01:00", "2026-12-23T15:30:00+01:00"},
		{"a blackout alone", schedule(t, nil, "2026-12-24"), "2026-12-24T12:00:00Z", "2026-12-25T00:00:00Z"},
		{"no schedule", schedule(t, nil), "2026-12-24T12:00:00Z", "2026-12-24T12:00:00Z"},
		{"two windows", schedule(t, []string{"Sat 22:00-24:00 UTC", "Sun 00:00-02:00 UTC"}), "2026-12-13T01:00:00Z", "2026-12-13T01:00:00Z"},
		{"a window across the week's end", schedule(t, []string{"Fri-Mon 12:00-13:00 America/New_York"}), "2026-12-08T12:30:00-05:00", "2026-12-11T12:00:00-05:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.s.Next(at(t, tc.from))
			if !ok || !got.Equal(at(t, tc.got)) {
				t.Fatalf("Next(%s) = %s %v, want %s", tc.from, got, ok, tc.got)
			}
		})
	}
	// A window that never opens outside a blackout longer than the horizon.
	s := schedule(t, office, "2026-12-01..2028-12-31")
	if _, ok := s.Next(at(t, "2026-12-09T10:00:00+01:00")); ok {
		t.Fatal("a schedule closed for two years opened")
	}
}

// TestParseErrors: each bad window or blackout is refused, naming what is wrong.
func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"Mon-Fri 09:00-16:00 Mars/Olympus": `unknown time zone "Mars/Olympus"`,
		"Mon-Fri 09:00-16:00 Local":        `unknown time zone "Local"`,
		"Mon-Fri 16:00-09:00 UTC":          "are empty",
		"Mon-Fri 09:00-09:00 UTC":          "are empty",
		"Mon-Fry 09:00-16:00 UTC":          `days "Mon-Fry"`,
		"Mon-Fri 9-16 UTC":                 `hours "9-16"`,
		"Mon-Fri 09:00-24:30 UTC":          `hours "09:00-24:30"`,
		"Mon-Fri":                          "want days, hours and a zone",
	} {
		if _, err := window.Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", in, err, want)
		}
	}
	for in, want := range map[string]string{
		"2027-01-02..2026-12-24":      "ends before it starts",
		"24.12.2026":                  "want dates",
		"2026-12-24 Atlantis/Capital": "unknown time zone",
	} {
		if _, err := window.ParseBlackout(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBlackout(%q): %v, want %q", in, err, want)
		}
	}
	b, err := window.ParseBlackout("2026-12-24..2027-01-02")
	if err != nil || b.Length() != 10*24*time.Hour {
		t.Fatalf("a ten-day blackout: %v %v", b.Length(), err)
	}
}
