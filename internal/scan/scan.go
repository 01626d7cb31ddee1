// Package scan finds AWS credentials where they should not be: in files, in the changes staged for a
// git commit, or in every blob of a repository's history. It finds access key ids (AKIA, ASIA, ABIA,
// ACCA and A3T… followed by 16 characters of base 32) and 40-character secret access keys that stand
// next to a key id or after an aws_secret_access_key-like name. A finding never carries a secret: the
// key id it shows is cut to its first 8 characters; the full id stays inside the process, for looking
// up whose key it is.
package scan

import (
	"bytes"
	"regexp"
)

// Rules.
const (
	RuleKeyID  = "aws-access-key-id"
	RuleSecret = "aws-secret-access-key"
)

// Finding is one credential found.
type Finding struct {
	Rule   string `json:"rule"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Commit string `json:"commit,omitempty"` // the first commit holding it (history scans)
	// KeyID is the access key id, cut to its first 8 characters (for a secret: the key id next to
	// it, if any).
	KeyID string `json:"key_id,omitempty"`
	// Owner says whose key it is and what to do, when a Keyward configuration was at hand.
	Owner *Owner `json:"owner,omitempty"`

	keyID string // the full key id, never printed
}

// FullKeyID is the whole key id, for looking its owner up (never to be printed).
func (f Finding) FullKeyID() string { return f.keyID }

// Owner is whose key a finding is, as Keyward knows it.
type Owner struct {
	Account string `json:"account,omitempty"`
	User    string `json:"user,omitempty"`
	Team    string `json:"team,omitempty"`
	// State: current, previous, inactive, deleted (a key Keyward manages or managed); active or
	// inactive (a key of the account that Keyward does not manage); unknown.
	State   string `json:"state"`
	Managed bool   `json:"managed"`
	Advice  string `json:"advice"`
}

var (
	keyIDRe  = regexp.MustCompile(`(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}`)
	secretRe = regexp.MustCompile(`[A-Za-z0-9/+]{40}`)
	// namedSecretRe is a secret after a name that says what it is: aws_secret_access_key = …,
	// "SecretAccessKey": "…", AWS_SECRET_KEY: ….
	namedSecretRe = regexp.MustCompile(`(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)["']?\s*(?::|=|=>)\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`)
	prefixes      = [][]byte{[]byte("AKIA"), []byte("ASIA"), []byte("ABIA"), []byte("ACCA"), []byte("A3T")}
	allowMark     = []byte("keyward:allow")
)

// exampleSecret is AWS's documented example secret access key.
const exampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

// allowedKeyID says whether a key id is one of AWS's documented examples (AKIAIOSFODNN7EXAMPLE and
// its kind: the ids AWS's documentation uses end in EXAMPLE).
func allowedKeyID(id []byte) bool { return bytes.HasSuffix(id, []byte("EXAMPLE")) }

func allowedSecret(s []byte) bool {
	return string(s) == exampleSecret || bytes.HasSuffix(s, []byte("EXAMPLEKEY"))
}

// Redact cuts a key id to what a finding may show.
func Redact(keyID string) string {
	if len(keyID) <= 8 {
		return keyID
	}
	return keyID[:8] + "…"
}

// isBinary says whether content looks binary: a NUL byte in its first 8000 bytes (as git decides).
func isBinary(b []byte) bool {
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}

// content scans one text: lines is where each line starts (for numbering), found is called for each
// finding. Key ids are looked for only where one of their prefixes occurs, and secrets only on the
// lines around a key id or on lines that name one, so most text is passed over by a byte search.
func content(data []byte, ignoreKey func(string) bool, found func(Finding)) {
	if isBinary(data) {
		return
	}
	type hit struct {
		line  int
		start int
		id    []byte
	}
	var keys []hit
	lineOf := newLines(data)
	for _, p := range prefixes {
		for off := 0; ; {
			i := bytes.Index(data[off:], p)
			if i < 0 {
				break
			}
			at := off + i
			off = at + 1
			end := min(len(data), at+20)
			m := keyIDRe.Find(data[at:end])
			if m == nil || (at > 0 && isKeyChar(data[at-1])) || (end < len(data) && isKeyChar(data[end])) {
				continue
			}
			keys = append(keys, hit{line: lineOf.number(at), start: at, id: m})
		}
	}
	lineText := func(n int) []byte { return lineOf.text(n) }
	secretLines := map[int]bool{}
	for _, k := range keys {
		text := lineText(k.line)
		if allowedKeyID(k.id) || bytes.Contains(text, allowMark) || (ignoreKey != nil && ignoreKey(string(k.id))) {
			continue
		}
		found(Finding{Rule: RuleKeyID, Line: k.line, KeyID: Redact(string(k.id)), keyID: string(k.id)})
		// A secret on the key id's line or on the two after it is the key's.
		for n := k.line; n <= k.line+2 && n <= lineOf.count(); n++ {
			if secretLines[n] {
				continue
			}
			t := lineText(n)
			if bytes.Contains(t, allowMark) {
				continue
			}
			for _, s := range secretRe.FindAll(t, -1) {
				if isSecret(t, s) && !allowedSecret(s) {
					secretLines[n] = true
					found(Finding{Rule: RuleSecret, Line: n, KeyID: Redact(string(k.id)), keyID: string(k.id)})
					break
				}
			}
		}
	}
	// Secrets named as such, anywhere (a key id may be far away, or in another file).
	if !bytes.Contains(data, []byte("ecret")) && !bytes.Contains(data, []byte("ECRET")) {
		return
	}
	for _, m := range namedSecretRe.FindAllSubmatchIndex(data, -1) {
		n := lineOf.number(m[2])
		s := data[m[2]:m[3]]
		if secretLines[n] || allowedSecret(s) || bytes.Contains(lineText(n), allowMark) {
			continue
		}
		secretLines[n] = true
		found(Finding{Rule: RuleSecret, Line: n})
	}
}

// isSecret says whether a 40-character run s in line t stands alone (not part of a longer token) and
// looks like a secret key: mixed case and at least one digit or / or +.
func isSecret(t, s []byte) bool {
	i := bytes.Index(t, s)
	if i > 0 && isSecretChar(t[i-1]) || i+len(s) < len(t) && (isSecretChar(t[i+len(s)]) || t[i+len(s)] == '=') {
		return false
	}
	var lower, upper, other bool
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= 'A' && c <= 'Z':
			upper = true
		default:
			other = true
		}
	}
	return lower && upper && other
}

func isKeyChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z'
}

func isSecretChar(c byte) bool { return isKeyChar(c) || c == '/' || c == '+' }

// lines numbers the lines of a text on demand.
type lines struct {
	data   []byte
	starts []int // where each line starts, filled as far as asked
}

func newLines(data []byte) *lines { return &lines{data: data, starts: []int{0}} }

// number is the 1-based line of byte offset at.
func (l *lines) number(at int) int {
	for l.starts[len(l.starts)-1] <= at {
		last := l.starts[len(l.starts)-1]
		i := bytes.IndexByte(l.data[last:], '\n')
		if i < 0 {
			l.starts = append(l.starts, len(l.data)+1)
			break
		}
		l.starts = append(l.starts, last+i+1)
	}
	// the first start beyond at, minus one
	lo, hi := 0, len(l.starts)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if l.starts[mid] <= at {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo + 1
}

// count is the number of lines known so far at least up to the end.
func (l *lines) count() int {
	l.number(len(l.data))
	return len(l.starts) - 1
}

// text is the content of line n (1-based), without its newline.
func (l *lines) text(n int) []byte {
	if n < 1 {
		return nil
	}
	if n >= len(l.starts) {
		l.number(len(l.data))
	}
	if n >= len(l.starts) {
		return nil
	}
	start, end := l.starts[n-1], l.starts[n]-1
	if start > len(l.data) {
		return nil
	}
	end = min(end, len(l.data))
	return l.data[start:end]
}
