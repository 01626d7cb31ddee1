package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"text/tabwriter"
	"time"
)

// WriteTable writes the summary and one line per finding.
func WriteTable(w io.Writer, r Report) error {
	s := r.Summary
	fmt.Fprintf(w, "Compliance on %s: %d of %d users compliant (%.1f%%); inventory read %s\n\n", s.Day, s.Compliant, s.Users, s.Percent,
		r.InventoryReadAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tCONTROL\tACCOUNT\tUSER\tKEY\tEVIDENCE\tREMEDY")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Control, f.Account, f.User, orDash(f.KeyID), f.Evidence, f.Remedy)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROL\tSOURCE\tFINDINGS")
	for _, c := range Controls {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", c.ID, c.Source, s.ByControl[c.ID])
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, r Report) error { return json.NewEncoder(w).Encode(r) }

// WriteCSV writes one row per finding, a header first.
func WriteCSV(w io.Writer, r Report) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"severity", "control", "source", "title", "account", "user", "access_key_id", "evidence", "remedy"})
	for _, f := range r.Findings {
		_ = cw.Write([]string{f.Severity, f.Control, f.Source, f.Title, f.Account, f.User, f.KeyID, f.Evidence, f.Remedy})
	}
	cw.Flush()
	return cw.Error()
}

// chartOf lays out the report's chart: its ages to the second when it was built here, else
// (a report read back from JSON) its whole days.
func chartOf(r Report) AgeChart {
	ages := r.ages
	if ages == nil {
		for _, d := range r.KeyAges {
			ages = append(ages, time.Duration(d)*day)
		}
	}
	return NewAgeChart(ages, r.Policy.chart())
}

// page is the HTML report: one self-contained page (inline CSS and SVG), readable offline and printable.
var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyward compliance report {{.R.Summary.Day}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d2733;max-width:75rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin-top:2rem}
.big{font-size:2.2rem;font-weight:700}.muted{color:#5b6775}
table{border-collapse:collapse;width:100%;margin-top:.5rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #dde3ea;vertical-align:top}
th{background:#f2f5f8}.critical{color:#fff;background:#9b1c1c}.high{color:#fff;background:#c2410c}.medium{background:#fcd34d}.low{background:#e0ecff}.info{background:#eef1f4}
.sev{padding:.1rem .4rem;border-radius:.25rem;font-size:.8rem;font-weight:600}
svg text{font:11px system-ui,sans-serif}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}}
</style></head><body>
<h1>Compliance report</h1>
<p class="muted">Generated {{when .R.GeneratedAt}} from the inventory read {{when .R.InventoryReadAt}} · accounts {{range $i, $a := .R.Accounts}}{{if $i}}, {{end}}{{$a}}{{end}}</p>
<p><span class="big">{{printf "%.1f" .R.Summary.Percent}}%</span> of users compliant — {{.R.Summary.Compliant}} of {{.R.Summary.Users}} with no finding of medium severity or worse.</p>
<h2>Ages of active keys</h2>
{{with .C}}<svg role="img" aria-label="Histogram of active access key ages, with the policy's deadlines" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}">
<line x1="40" y1="{{.AxisY}}" x2="{{.W}}" y2="{{.AxisY}}" stroke="#8894a0"/>
{{range .Bars}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="#3b6ea5"><title>{{.Count}} keys aged {{.Label}}</title></rect>
{{if .Count}}<text x="{{.LabelX}}" y="{{.TextY}}" text-anchor="middle">{{.Count}}</text>{{end}}
{{end}}{{range .Ticks}}<text x="{{.X}}" y="{{$.C.BaseY}}">{{.Label}}</text>
{{end}}{{range .Lines}}<line x1="{{.X}}" y1="{{.TextY}}" x2="{{.X}}" y2="{{$.C.AxisY}}" stroke="#9b1c1c" stroke-dasharray="4 3"/><text x="{{.TextX}}" y="{{.TextY}}" text-anchor="{{.Anchor}}" fill="#9b1c1c">{{.Label}}</text>
{{end}}<text x="{{.MidX}}" y="{{.H}}" text-anchor="middle" dy="-4">{{.Unit}}</text>
</svg>{{end}}
<h2>Controls</h2>
<table><tr><th>Control</th><th>Source</th><th>Severity</th><th>Findings</th><th>Remedy</th></tr>
{{range .R.Controls}}<tr><td>{{.Title}}</td><td>{{.Source}}</td><td><span class="sev {{.Severity}}">{{.Severity}}</span></td><td>{{index $.R.Summary.ByControl .ID}}</td><td>{{.Remedy}}</td></tr>
{{end}}</table>
<h2>Findings ({{len .R.Findings}})</h2>
<table><tr><th>Severity</th><th>Finding</th><th>Account</th><th>User</th><th>Key</th><th>Evidence</th><th>Remedy</th></tr>
{{range .R.Findings}}<tr><td><span class="sev {{.Severity}}">{{.Severity}}</span></td><td>{{.Title}}<br><span class="muted">{{.Source}}</span></td><td>{{.Account}}</td><td>{{.User}}</td><td>{{.KeyID}}</td><td>{{.Evidence}}</td><td>{{.Remedy}}</td></tr>
{{end}}</table>
{{if .R.History}}<h2>Trend</h2><table><tr><th>Day</th><th>Compliant</th><th>Findings</th></tr>
{{range .R.History}}<tr><td>{{.Day}}</td><td>{{printf "%.1f" .Percent}}% ({{.Compliant}}/{{.Users}})</td><td>{{range $k, $v := .BySeverity}}{{$k}} {{$v}} {{end}}</td></tr>
{{end}}</table>{{end}}
</body></html>
`))

// WriteHTML writes the report as one self-contained HTML page.
func WriteHTML(w io.Writer, r Report) error {
	return page.Execute(w, map[string]any{"R": r, "C": chartOf(r)})
}
