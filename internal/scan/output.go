package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Describe says what a finding is, in words (never a secret).
func (f Finding) Describe() string {
	what := "AWS access key id " + f.KeyID
	if f.Rule == RuleSecret {
		what = "AWS secret access key (not shown)"
		if f.KeyID != "" {
			what += " of " + f.KeyID
		}
	}
	return what
}

// WriteText writes one line per finding: file:line, the commit, what was found, whose it is.
func WriteText(w io.Writer, fs []Finding) error {
	for _, f := range fs {
		at := fmt.Sprintf("%s:%d", f.File, f.Line)
		if f.Commit != "" {
			at += " (commit " + f.Commit[:min(12, len(f.Commit))] + ")"
		}
		line := at + ": " + f.Describe()
		if o := f.Owner; o != nil {
			var who []string
			if o.Team != "" {
				who = append(who, "team "+o.Team)
			}
			if o.User != "" {
				who = append(who, "IAM user "+o.User+" in "+o.Account)
			}
			if len(who) == 0 {
				who = append(who, "owner unknown")
			}
			line += " — " + strings.Join(who, ", ") + ", " + o.State + ": " + o.Advice
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes the findings as one JSON document.
func WriteJSON(w io.Writer, fs []Finding, scannedBytes int64) error {
	if fs == nil {
		fs = []Finding{}
	}
	return json.NewEncoder(w).Encode(map[string]any{"findings": fs, "scanned_bytes": scannedBytes})
}

// WriteSARIF writes the findings as a SARIF 2.1.0 log, which CI systems (GitHub code scanning and
// others) show on the lines at fault.
func WriteSARIF(w io.Writer, fs []Finding, version string) error {
	type region struct {
		StartLine int `json:"startLine"`
	}
	type location struct {
		PhysicalLocation struct {
			ArtifactLocation struct {
				URI string `json:"uri"`
			} `json:"artifactLocation"`
			Region region `json:"region"`
		} `json:"physicalLocation"`
	}
	type result struct {
		RuleID              string            `json:"ruleId"`
		Level               string            `json:"level"`
		Message             map[string]string `json:"message"`
		Locations           []location        `json:"locations"`
		PartialFingerprints map[string]string `json:"partialFingerprints,omitempty"`
		Properties          map[string]any    `json:"properties,omitempty"`
	}
	results := []result{}
	for _, f := range fs {
		var loc location
		loc.PhysicalLocation.ArtifactLocation.URI = f.File
		loc.PhysicalLocation.Region = region{StartLine: max(f.Line, 1)}
		r := result{RuleID: f.Rule, Level: "error", Message: map[string]string{"text": f.Describe()}, Locations: []location{loc}}
		if f.Commit != "" {
			r.PartialFingerprints = map[string]string{"commitSha": f.Commit}
		}
		if f.Owner != nil {
			r.Properties = map[string]any{"owner": f.Owner}
		}
		results = append(results, r)
	}
	rule := func(id, name, text string) map[string]any {
		return map[string]any{"id": id, "name": name, "shortDescription": map[string]string{"text": text},
			"help":                 map[string]string{"text": "Report the key: keyward leak KEY_ID (a key Keyward manages is replaced and deactivated at once), then remove it from the file and its history."},
			"defaultConfiguration": map[string]string{"level": "error"}}
	}
	doc := map[string]any{
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"version": "2.1.0",
		"runs": []any{map[string]any{
			"tool": map[string]any{"driver": map[string]any{"name": "keyward", "version": version, "informationUri": "https://github.com/keyward/keyward",
				"rules": []any{rule(RuleKeyID, "AWSAccessKeyID", "An AWS access key id"), rule(RuleSecret, "AWSSecretAccessKey", "An AWS secret access key")}}},
			"results": results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
