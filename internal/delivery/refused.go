package delivery

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// RefusedError is a CI system's refusal of a request (GitHub, GitLab): its status, the service's
// own message (which never quotes a value), and what to do about it.
type RefusedError struct {
	Service string // "GitHub", "GitLab"
	Target  string // the target's Key
	Method  string
	Path    string
	Status  int
	Message string
	Hint    string
	Wait    time.Duration // a rate limit's wait
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("%s: %s answered %s %s with %d", e.Target, e.Service, e.Method, e.Path, e.Status)
	if e.Message != "" {
		s += " (" + e.Message + ")"
	}
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// RetryAfter is how long to wait before trying again: set for rate limits (the engine waits at
// least that long).
func (e *RefusedError) RetryAfter() time.Duration { return e.Wait }

// Permanent says that trying again will not help: the service refused the token, the permission or
// the content (4xx other than a rate limit or a timeout), and only a person can change that (the
// engine rolls back at once).
func (e *RefusedError) Permanent() bool {
	return e.Wait == 0 && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout
}

// TokenFromFile reads a token from the first line of a file, at each use, so that a replaced file
// is used at once.
func TokenFromFile(path string) (secret.Value, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return secret.Value{}, fmt.Errorf("read token_file: %w", err)
	}
	t := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0])
	if t == "" {
		return secret.Value{}, fmt.Errorf("token_file %s is empty", path)
	}
	return secret.New(t), nil
}
