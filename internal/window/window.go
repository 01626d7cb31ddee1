// Package window reads change windows and blackouts — "Mon-Fri 09:00-16:00 Europe/Berlin",
// "2026-12-24..2027-01-02" — and says when a step may next happen: at once inside a window and
// outside every blackout, else at the first instant that is. Times are wall-clock times in the
// window's own zone, so a window keeps its hours across daylight-saving changes.
package window

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zones without the host's tz database (the distroless image has none)
)

// Window is a set of weekdays and a time of day in a zone.
type Window struct {
	Days       [7]bool // by time.Weekday
	Start, End int     // minutes after midnight, Start < End ≤ 24h
	Zone       *time.Location
	text       string
}

// String is the window as written.
func (w Window) String() string { return w.text }

// Blackout is a range of whole days, both ends included, in a zone.
type Blackout struct {
	From, Through time.Time // midnight of the first day, midnight of the last day
	Zone          *time.Location
	text          string
}

// String is the blackout as written.
func (b Blackout) String() string { return b.text }

// Schedule is when a step may happen: inside one of the windows (any time without windows), and in
// none of the blackouts.
type Schedule struct {
	Windows   []Window
	Blackouts []Blackout
}

// IsZero reports whether the schedule allows every instant.
func (s Schedule) IsZero() bool { return len(s.Windows) == 0 && len(s.Blackouts) == 0 }

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Parse reads a window: days (Mon-Fri, Sat,Sun, Fri-Mon, or daily), a time range (HH:MM-HH:MM, end
// after start, 24:00 for midnight at the end), and an IANA zone.
func Parse(s string) (Window, error) {
	w := Window{text: s}
	f := strings.Fields(s)
	if len(f) != 3 {
		return w, fmt.Errorf("window %q: want days, hours and a zone, such as \"Mon-Fri 09:00-16:00 Europe/Berlin\"", s)
	}
	if err := parseDays(f[0], &w.Days); err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	from, to, ok := strings.Cut(f[1], "-")
	var err1, err2 error
	w.Start, err1 = minutes(from)
	w.End, err2 = minutes(to)
	if !ok || err1 != nil || err2 != nil {
		return w, fmt.Errorf("window %q: hours %q: want HH:MM-HH:MM, such as 09:00-16:00", s, f[1])
	}
	if w.End <= w.Start {
		return w, fmt.Errorf("window %q: hours %q are empty: the end must come after the start (write two windows for one across midnight)", s, f[1])
	}
	zone, err := time.LoadLocation(f[2])
	if err != nil || f[2] == "Local" {
		return w, fmt.Errorf("window %q: unknown time zone %q: want an IANA zone such as Europe/Berlin or UTC", s, f[2])
	}
	w.Zone = zone
	return w, nil
}

func parseDays(s string, days *[7]bool) error {
	if strings.EqualFold(s, "daily") {
		*days = [7]bool{true, true, true, true, true, true, true}
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, okA := dayNames[strings.ToLower(from)]
		b, okB := dayNames[strings.ToLower(to)]
		switch {
		case !okA || (isRange && !okB):
			return fmt.Errorf("days %q: want Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges (Mon-Fri) and lists (Sat,Sun), or daily", s)
		case !isRange:
			days[a] = true
		default:
			for d := a; ; d = (d + 1) % 7 {
				days[d] = true
				if d == b {
					break
				}
			}
		}
	}
	return nil
}

func minutes(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return hh*60 + mm, nil
}

// ParseBlackout reads a blackout: a day (2026-12-24) or a range of days (2026-12-24..2027-01-02,
// both included), optionally followed by an IANA zone (UTC without one).
func ParseBlackout(s string) (Blackout, error) {
	b := Blackout{text: s, Zone: time.UTC}
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return b, fmt.Errorf("blackout %q: want a day or days, such as 2026-12-24..2027-01-02, and optionally a zone", s)
	}
	if len(f) == 2 {
		zone, err := time.LoadLocation(f[1])
		if err != nil || f[1] == "Local" {
			return b, fmt.Errorf("blackout %q: unknown time zone %q: want an IANA zone such as Europe/Berlin or UTC", s, f[1])
		}
		b.Zone = zone
	}
	from, through, isRange := strings.Cut(f[0], "..")
	if !isRange {
		through = from
	}
	var err1, err2 error
	b.From, err1 = time.ParseInLocation(time.DateOnly, from, b.Zone)
	b.Through, err2 = time.ParseInLocation(time.DateOnly, through, b.Zone)
	if err1 != nil || err2 != nil {
		return b, fmt.Errorf("blackout %q: want dates as 2026-12-24, a range as 2026-12-24..2027-01-02", s)
	}
	if b.Through.Before(b.From) {
		return b, fmt.Errorf("blackout %q: it ends before it starts", s)
	}
	return b, nil
}

// Length is how long the blackout lasts.
func (b Blackout) Length() time.Duration { return b.end().Sub(b.From) }

// end is the first instant after the blackout: midnight after its last day.
func (b Blackout) end() time.Time {
	y, m, d := b.Through.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, b.Zone)
}

func (b Blackout) contains(t time.Time) bool { return !t.Before(b.From) && t.Before(b.end()) }

// contains says whether t falls inside the window.
func (w Window) contains(t time.Time) bool {
	l := t.In(w.Zone)
	m := l.Hour()*60 + l.Minute()
	return w.Days[l.Weekday()] && m >= w.Start && m < w.End
}

// Open says whether a step may happen at t.
func (s Schedule) Open(t time.Time) bool {
	for _, b := range s.Blackouts {
		if b.contains(t) {
			return false
		}
	}
	if len(s.Windows) == 0 {
		return true
	}
	return slices.ContainsFunc(s.Windows, func(w Window) bool { return w.contains(t) })
}

// horizon is how far ahead Next looks: past it, no window opens (a schedule config check refuses).
const horizon = 400 * 24 * time.Hour

// Next is the first instant at or after t when a step may happen; false when none comes within 400
// days.
func (s Schedule) Next(t time.Time) (time.Time, bool) {
	if s.Open(t) {
		return t, true
	}
	// The schedule can only open at a window's start or a blackout's end: try those in order.
	var candidates []time.Time
	for _, b := range s.Blackouts {
		if e := b.end(); e.After(t) {
			candidates = append(candidates, e)
		}
	}
	for _, w := range s.Windows {
		l := t.In(w.Zone)
		y, m, d := l.Date()
		for day := 0; day <= int(horizon/(24*time.Hour)); day++ {
			date := time.Date(y, m, d+day, 0, 0, 0, 0, w.Zone)
			if !w.Days[date.Weekday()] {
				continue
			}
			start := time.Date(y, m, d+day, w.Start/60, w.Start%60, 0, 0, w.Zone)
			end := time.Date(y, m, d+day, w.End/60, w.End%60, 0, 0, w.Zone)
			switch {
			case !end.After(t):
			case start.After(t):
				candidates = append(candidates, start)
			default:
				candidates = append(candidates, t) // inside the hours: a blackout's end may open it
			}
		}
	}
	slices.SortFunc(candidates, func(a, b time.Time) int { return a.Compare(b) })
	for _, c := range candidates {
		if c.Sub(t) > horizon {
			break
		}
		if s.Open(c) {
			return c, true
		}
	}
	return time.Time{}, false
}
