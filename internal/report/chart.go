package report

import (
	"fmt"
	"time"
)

// AgeChart is the layout of an SVG histogram of key ages against the policy's deadlines. Its
// buckets are scaled to the policy, so that the keys of a minutes-long demo policy spread over
// several bars as those of a 90-day one do, and no two of its labels overlap.
type AgeChart struct {
	Bars  []Bar
	Lines []Deadline
	// Ticks are the axis labels, at most one per bar and never closer than a label's width.
	Ticks []Tick
	// W and H are the drawing's size; Top is where the bars' area starts (below the deadline
	// labels), AxisY the axis, BaseY the tick labels' baseline, MidX the axis title's x.
	W, H, Top, AxisY, BaseY, MidX int
	// Unit is the axis title: "age (minutes)", "age (hours)" or "age (days)".
	Unit string
}

// Bar is one bucket of the histogram.
type Bar struct {
	Label         string // the bucket's range, for its tooltip: "15d–30d"
	Count         int
	X, Y, W, H    int
	LabelX, TextY int
}

// Deadline is one of the policy's deadlines drawn across the histogram, with its label placed
// on the first row where it overlaps no other (Anchor is the SVG text-anchor).
type Deadline struct {
	Label        string
	X            int
	TextX, TextY int
	Anchor       string
}

// Tick is a label under the axis.
type Tick struct {
	Label string
	X     int
}

// The chart's geometry, in SVG user units. charW is a generous width of one character of the
// 11px labels, so that an estimate that fits on paper fits on screen.
const (
	chartLeft  = 40
	chartBarW  = 36
	chartGap   = 6
	chartPlotH = 150
	chartRowH  = 13
	charW      = 7
	maxBuckets = 12
)

// bucketSteps are the widths a bucket may have, smallest first: whole minutes, hours, days.
var bucketSteps = []time.Duration{
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	day, 2 * day, 5 * day, 7 * day, 10 * day, 15 * day, 30 * day, 60 * day, 90 * day, 180 * day, 365 * day,
}

// ChartPolicy is the deadlines a chart draws: a key's age when it is replaced, deactivated and
// deleted.
type ChartPolicy struct {
	RotateAfter, DeactivateAfter, DeleteAfter time.Duration
}

// mark is a named deadline: a key's age.
type mark struct {
	name string
	at   time.Duration
}

// cisDeadline is CIS AWS Foundations' 90 days, drawn when the chart reaches it.
const cisDeadline = 90 * day

// NewAgeChart lays out ages (of the current keys) against p. The buckets cover the policy's life
// of a key (rotate + deactivate + delete) with room to spare, in at most maxBuckets steps of a
// round width; the last bucket holds everything older.
func NewAgeChart(ages []time.Duration, p ChartPolicy) AgeChart {
	deadlines := []mark{{"rotate", p.RotateAfter}, {"deactivate", p.RotateAfter + p.DeactivateAfter},
		{"delete", p.RotateAfter + p.DeactivateAfter + p.DeleteAfter}}
	horizon := deadlines[2].at + deadlines[2].at/4
	if horizon <= 0 {
		horizon = 120 * day
	}
	step := bucketSteps[len(bucketSteps)-1]
	for _, s := range bucketSteps {
		if horizon <= s*time.Duration(maxBuckets-1) {
			step = s
			break
		}
	}
	n := int((horizon+step-1)/step) + 1 // the last bucket is open-ended
	if cisDeadline < step*time.Duration(n-1) {
		deadlines = append(deadlines, mark{"CIS 90d", cisDeadline})
	}

	counts := make([]int, n)
	for _, a := range ages {
		counts[min(int(max(a, 0)/step), n-1)]++
	}
	top := 1
	for _, c := range counts {
		top = max(top, c)
	}

	c := AgeChart{Unit: "age (" + unitName(step) + ")"}
	pitch := chartBarW + chartGap
	c.W = chartLeft + n*pitch + 20
	dayX := func(d time.Duration) int { return chartLeft + int(float64(d)/float64(step)*float64(pitch)) }

	lines, rows := placeDeadlines(deadlines, step*time.Duration(n-1), dayX, c.W)
	c.Lines = lines
	c.Top = 16 + rows*chartRowH
	c.AxisY = c.Top + chartPlotH
	c.BaseY = c.AxisY + 14
	c.H = c.BaseY + 22
	c.MidX = c.W / 2

	lastTickEnd := -1 << 30
	for i, cnt := range counts {
		h := cnt * chartPlotH / top
		x := chartLeft + i*pitch
		label := fmt.Sprintf("%s–%s", span(step*time.Duration(i), step), span(step*time.Duration(i+1), step))
		tick := span(step*time.Duration(i), step)
		if i == n-1 {
			label = span(step*time.Duration(i), step) + " or older"
			tick += "+"
		}
		c.Bars = append(c.Bars, Bar{Label: label, Count: cnt, X: x, Y: c.AxisY - h, W: chartBarW, H: h,
			LabelX: x + chartBarW/2, TextY: c.AxisY - h - 4})
		// A tick starts at its bucket's left edge, and is skipped when the previous one is in the way.
		if x >= lastTickEnd+6 {
			c.Ticks = append(c.Ticks, Tick{Label: tick, X: x})
			lastTickEnd = x + len(tick)*charW
		}
	}
	return c
}

// placeDeadlines lays out the deadlines drawn before last (x from dayX, in a drawing of width w):
// each label on the first row where it does not touch a label already placed, anchored at its
// end where it would leave the drawing. It returns the lines and how many rows they take.
func placeDeadlines(deadlines []mark, last time.Duration, dayX func(time.Duration) int, w int) ([]Deadline, int) {
	var lines []Deadline
	var rowsEnd []int
	for _, d := range deadlines {
		if d.at <= 0 || d.at >= last {
			continue
		}
		x := dayX(d.at)
		l := Deadline{Label: d.name, X: x, TextX: x + 2, Anchor: "start"}
		width := len(d.name) * charW
		if l.TextX+width > w {
			l.TextX, l.Anchor = x-2, "end"
		}
		start := l.TextX
		if l.Anchor == "end" {
			start -= width
		}
		row := 0
		for row < len(rowsEnd) && rowsEnd[row]+4 > start {
			row++
		}
		if row == len(rowsEnd) {
			rowsEnd = append(rowsEnd, 0)
		}
		rowsEnd[row] = start + width
		l.TextY = 11 + row*chartRowH
		lines = append(lines, l)
	}
	return lines, len(rowsEnd)
}

// unitName is the axis's unit for buckets of step.
func unitName(step time.Duration) string {
	switch {
	case step < time.Hour:
		return "minutes"
	case step < day:
		return "hours"
	}
	return "days"
}

// span writes d in the unit of step: "45m", "12h", "30d".
func span(d, step time.Duration) string {
	switch {
	case step < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case step < day:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dd", d/day)
}
