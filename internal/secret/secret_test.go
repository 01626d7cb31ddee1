package secret_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keyward/keyward/internal/secret"
)

const plaintext = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

type credential struct {
	AccessKeyID string
	Secret      secret.Value
	Ptr         *secret.Value
}

// TestNothingPrintsPlaintext tries every accidental path a secret can take to a log line or an
// error message and checks that the plaintext never comes out.
func TestNothingPrintsPlaintext(t *testing.T) {
	v := secret.New(plaintext)
	c := credential{AccessKeyID: "AKIAEXAMPLE", Secret: v, Ptr: &v}

	var buf bytes.Buffer
	jsonLog := slog.New(slog.NewJSONHandler(&buf, nil))
	textLog := slog.New(slog.NewTextHandler(&buf, nil))
	for _, l := range []*slog.Logger{jsonLog, textLog} {
		l.Info("value", "secret", v)
		l.Info("pointer", "secret", &v)
		l.Info("struct", "credential", c)
		l.Info("any", slog.Any("credential", c))
		l.Info(fmt.Sprintf("formatted %v %+v %#v %s %q %x %X %d", v, c, c, v, v, v, v, v))
		l.Info("group", slog.Group("g", slog.Any("s", v)))
		l.Error("error", "err", fmt.Errorf("store %v: %w", c, errors.New("boom")))
	}
	log.New(&buf, "", 0).Printf("std log %v %s", c, v)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(j)
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(y)

	out := buf.String()
	if strings.Contains(out, plaintext) {
		t.Fatalf("plaintext leaked:\n%s", out)
	}
	if got := strings.Count(out, secret.Redacted); got < 20 {
		t.Fatalf("expected the placeholder in every line, saw it %d times:\n%s", got, out)
	}
}

func TestRevealAndYAML(t *testing.T) {
	var cfg struct {
		Password secret.Value `yaml:"password"`
	}
	if err := yaml.Unmarshal([]byte("password: "+plaintext), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Password.Reveal() != plaintext {
		t.Fatalf("Reveal = %q", cfg.Password.Reveal())
	}
	if !cfg.Password.Equal(secret.New(plaintext)) || cfg.Password.IsZero() {
		t.Fatal("Equal/IsZero disagree with the content")
	}
	if !(secret.Value{}).IsZero() {
		t.Fatal("zero Value is not IsZero")
	}
}
