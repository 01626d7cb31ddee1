package notify

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	texttemplate "text/template"
)

//go:embed templates/*.tmpl
var defaultTemplates embed.FS

// Message is a notice rendered for people.
type Message struct {
	Subject, Text, HTML string
}

// Templates render notices. The defaults are built in; a directory may override any of
// subject.tmpl, text.tmpl and html.tmpl (Go templates over .Title, .Advice and .Notice).
type Templates struct {
	subject, text *texttemplate.Template
	html          *htmltemplate.Template
}

// titles and advice per event, as the default templates show them.
var (
	titles = map[string]string{
		KeyRotated: "Access key rotated", KeyDeactivationComing: "Old access key to be deactivated soon",
		KeyDeactivated: "Old access key deactivated", KeyDeleted: "Access key deleted", RotationFailed: "Key rotation failed",
		RotationBlocked: "Key rotation blocked", RotationHeld: "Old access key still in use: deactivation held",
		DeliveryFailed: "New access key could not be delivered: rotation rolled back",
		KeyLeaked:      "URGENT: access key reported exposed",
	}
	advice = map[string]string{
		KeyRotated:            "Programs that read their key from Keyward get the new one now. The old key keeps working until it is deactivated.",
		KeyDeactivationComing: "Make sure every program uses the new key before then: a program still on the old key will stop working.",
		KeyDeactivated:        "The old key no longer signs requests. It will be deleted later.",
		KeyDeleted:            "The key is gone from the cloud and its secret from the vault.",
		RotationFailed:        "The old key was left as it was and keeps working. Keyward will try again later.",
		RotationBlocked:       "Keyward cannot make room for a new key without deleting one it may not delete. Someone must look.",
		RotationHeld:          "A program still signs with the old key. It stays active until that stops (or until forced).",
		KeyLeaked:             "A key was reported exposed. A key Keyward manages is replaced and deactivated at once, then deleted after an hour; a key it does not manage must be deactivated and replaced by its owner. Look for what used it: the audit trail and CloudTrail.",
		DeliveryFailed:        "A delivery target (Secrets Manager or Parameter Store) did not take the new key: the targets hold the old key again, which keeps working, and the new key was deleted. Keyward will try again later.",
	}
)

// LoadTemplates returns the built-in templates with those in dir ("" for none) in their place.
func LoadTemplates(dir string) (*Templates, error) {
	read := func(name string) (string, error) {
		if dir != "" {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err == nil {
				return string(b), nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", err
			}
		}
		b, err := defaultTemplates.ReadFile("templates/" + name)
		return string(b), err
	}
	var t Templates
	var err error
	for _, part := range []struct {
		name  string
		parse func(string) error
	}{
		{"subject.tmpl", func(s string) (err error) { t.subject, err = texttemplate.New("subject").Parse(s); return }},
		{"text.tmpl", func(s string) (err error) { t.text, err = texttemplate.New("text").Parse(s); return }},
		{"html.tmpl", func(s string) (err error) { t.html, err = htmltemplate.New("html").Parse(s); return }},
	} {
		src, rerr := read(part.name)
		if rerr != nil {
			return nil, fmt.Errorf("notification template %s: %w", part.name, rerr)
		}
		if err = part.parse(src); err != nil {
			return nil, fmt.Errorf("notification template %s: %w", part.name, err)
		}
	}
	return &t, nil
}

// Render renders a notice.
func (t *Templates) Render(n Notice) (Message, error) {
	data := struct {
		Title, Advice string
		Notice        Notice
	}{titles[n.Event], advice[n.Event], n}
	if data.Title == "" {
		data.Title = n.Event
	}
	var subject, text, html bytes.Buffer
	if err := t.subject.Execute(&subject, data); err != nil {
		return Message{}, fmt.Errorf("render subject: %w", err)
	}
	if err := t.text.Execute(&text, data); err != nil {
		return Message{}, fmt.Errorf("render text: %w", err)
	}
	if err := t.html.Execute(&html, data); err != nil {
		return Message{}, fmt.Errorf("render html: %w", err)
	}
	// A subject is one line.
	return Message{Subject: strings.Join(strings.Fields(subject.String()), " "), Text: text.String(), HTML: html.String()}, nil
}
