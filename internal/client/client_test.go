package client_test

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/client"
	"github.com/keyward/keyward/internal/secret"
)

const apiKey = "kw_test_key_that_must_never_be_printed"

func TestNewChecksItsOptions(t *testing.T) {
	key := secret.New(apiKey)
	for _, c := range []struct {
		o    client.Options
		want string
	}{
		{client.Options{Server: "http://keyward.internal", APIKey: key}, "loopback"},
		{client.Options{Server: "ftp://keyward.internal", APIKey: key}, "--server"},
		{client.Options{Server: "https://user:pw@keyward.internal", APIKey: key}, "--server"},
		{client.Options{Server: "https://keyward.internal"}, "API key"},
		{client.Options{Server: "https://keyward.internal", APIKey: key, Token: key}, "not both"},
		{client.Options{Server: "https://keyward.internal", APIKey: key, CAFile: "/nonexistent/ca.pem"}, "--ca-file"},
	} {
		_, err := client.New(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), apiKey) {
			t.Errorf("%+v: %v, want an error naming %s", c.o.Server, err, c.want)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://keyward.internal"} {
		if _, err := client.New(client.Options{Server: ok, APIKey: key}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// A server whose certificate a private CA signed is reached with --ca-file, and refused without it.
func TestPrivateCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") != apiKey {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"detail":"a valid token or API key is required"}`))
			return
		}
		if r.URL.Path != "/v1/teams/pay ments/credentials" {
			t.Errorf("path %q", r.URL.Path)
		}
		_, _ = w.Write([]byte(`{"Version":1,"AccessKeyId":"ASIAX","type":"` + r.URL.Query().Get("type") + `"}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Options{Server: srv.URL, APIKey: secret.New(apiKey), CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.Credentials(context.Background(), "pay ments", "session", "", "credential-process")
	if err != nil || !strings.Contains(string(body), `"type":"session"`) {
		t.Fatalf("with the CA: %s %v", body, err)
	}
	plain, _ := client.New(client.Options{Server: srv.URL, APIKey: secret.New(apiKey)})
	if _, err := plain.Credentials(context.Background(), "payments", "key", "", "json"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v", err)
	}
	wrong, _ := client.New(client.Options{Server: srv.URL, APIKey: secret.New("kw_wrong"), CAFile: ca})
	_, err = wrong.Credentials(context.Background(), "payments", "key", "", "json")
	if err == nil || err.Error() != "keyward answered 401: a valid token or API key is required" {
		t.Fatalf("refused: %v", err)
	}
}
