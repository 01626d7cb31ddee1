package report_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/report"
)

// TestAgeChart: the buckets scale to the policy, so that the keys of the demo's minute policy and
// of a 90-day one both spread over several bars, and no two labels overlap (deadline labels,
// which the 90-day policy puts at the same x as CIS's 90 days, nor the axis's ticks).
func TestAgeChart(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		name   string
		policy report.ChartPolicy
		ages   []time.Duration
		unit   string
		lines  int
	}{
		{"demo minutes", report.ChartPolicy{RotateAfter: 3 * time.Minute, DeactivateAfter: time.Minute, DeleteAfter: time.Minute},
			[]time.Duration{10 * time.Second, 50 * time.Second, 90 * time.Second, 2 * time.Minute, 150 * time.Second, 4 * time.Minute, 10 * time.Minute, time.Hour},
			"age (minutes)", 3},
		{"90 days", report.ChartPolicy{RotateAfter: 90 * day, DeactivateAfter: 7 * day, DeleteAfter: 30 * day},
			[]time.Duration{day, 20 * day, 45 * day, 80 * day, 95 * day, 400 * day},
			"age (days)", 4},
		{"hours", report.ChartPolicy{RotateAfter: 12 * time.Hour, DeactivateAfter: 2 * time.Hour, DeleteAfter: time.Hour},
			[]time.Duration{time.Hour, 5 * time.Hour, 13 * time.Hour, 30 * time.Hour}, "age (hours)", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := report.NewAgeChart(tc.ages, tc.policy)
			if c.Unit != tc.unit || len(c.Lines) != tc.lines {
				t.Fatalf("unit %q, %d deadlines %+v; want %q, %d", c.Unit, len(c.Lines), c.Lines, tc.unit, tc.lines)
			}
			nonEmpty, total := 0, 0
			for _, b := range c.Bars {
				if b.Count > 0 {
					nonEmpty++
				}
				total += b.Count
			}
			if total != len(tc.ages) || nonEmpty < len(tc.ages)/2 || len(c.Bars) > 13 {
				t.Fatalf("%d keys in %d of %d bars: %+v", total, nonEmpty, len(c.Bars), c.Bars)
			}
			if last := c.Bars[len(c.Bars)-1]; last.Count == 0 {
				t.Errorf("the last bucket holds the oldest keys: %+v", last)
			}
			type box struct {
				label          string
				x0, x1, y0, y1 int
			}
			var boxes []box
			const charW, height = 7, 11
			for _, l := range c.Lines {
				w := len(l.Label) * charW
				x0 := l.TextX
				if l.Anchor == "end" {
					x0 -= w
				}
				if x0 < 0 || x0+w > c.W {
					t.Errorf("deadline %q at %d..%d leaves the drawing of width %d", l.Label, x0, x0+w, c.W)
				}
				if l.TextY >= c.Top {
					t.Errorf("deadline %q's label at y %d is inside the bars' area (from %d)", l.Label, l.TextY, c.Top)
				}
				boxes = append(boxes, box{l.Label, x0, x0 + w, l.TextY - height, l.TextY})
			}
			for _, tk := range c.Ticks {
				boxes = append(boxes, box{tk.Label, tk.X, tk.X + len(tk.Label)*charW, c.BaseY - height, c.BaseY})
			}
			for i, a := range boxes {
				for _, b := range boxes[i+1:] {
					if a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1 {
						t.Errorf("labels %q %v and %q %v overlap", a.label, a, b.label, b)
					}
				}
			}
			if len(c.Ticks) < len(c.Bars)/2 {
				t.Errorf("%d ticks for %d bars", len(c.Ticks), len(c.Bars))
			}
		})
	}
}
