package httpapi

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeBodies runs every JSON body the API reads through its decoder: it never panics, and what
// it refuses it refuses as a bad request that names the body.
func FuzzDecodeBodies(f *testing.F) {
	for _, seed := range []string{
		`{"username":"alice","password":"a long enough password","totp":"123456"}`,
		`{"name":"bob","role":"member","teams":["payments"],"password":"a long enough password"}`,
		`{"name":"payments","iam_user":"payments-app","account_id":"123456789012"}`,
		`{"member":"apikey:ci"}`,
		`{"name":"ci","role":"member","teams":["a"],"cidrs":["10.0.0.0/8"],"expires":"2160h"}`,
		``, `null`, `[]`, `{`, `{"name":1}`, `{"name":"x"} {"name":"y"}`, `{"unknown":true}`, "\x00", `{"teams":[1,2]}`,
	} {
		f.Add([]byte(seed))
	}
	targets := []func() any{
		func() any { return &loginRequest{} }, func() any { return &userRequest{} }, func() any { return &teamRequest{} },
		func() any { return &memberRequest{} }, func() any { return &apiKeyRequest{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range targets {
			err := decodeJSON(strings.NewReader(string(body)), target())
			var bad *badRequest
			if err != nil && (!errors.As(err, &bad) || !strings.HasPrefix(err.Error(), "body")) {
				t.Fatalf("%q: %v", body, err)
			}
		}
	})
}
