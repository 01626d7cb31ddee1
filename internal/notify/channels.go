package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/smtp"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// WebhookBody is what a webhook receives: the notice and its idempotency id.
type WebhookBody struct {
	ID string `json:"id"` // the same on every retry of this delivery
	Notice
	Subject string `json:"subject"`
	Text    string `json:"text"`
}

// Webhook POSTs JSON to URLs, signed: X-Keyward-Signature is sha256=<hex HMAC-SHA256 of the
// timestamp, ".", and the body>, keyed by the route's secret; X-Keyward-Timestamp is that Unix time.
// A route's destination is the webhook's name: its URL may carry a token, so it is kept here only,
// never in the outbox, a log line or an error.
type Webhook struct {
	Client *http.Client
	Hooks  map[string]WebhookTarget // name → URL and signing secret
	Now    func() time.Time
}

// WebhookTarget is where a named webhook posts, and the key it signs with.
type WebhookTarget struct {
	URL    secret.Value
	Secret secret.Value
}

// Name implements Channel.
func (w *Webhook) Name() string { return "webhook" }

// Sign returns the X-Keyward-Signature value of body sent at timestamp.
func Sign(key secret.Value, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(key.Reveal()))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Send implements Channel.
func (w *Webhook) Send(ctx context.Context, d Delivery, msg Message) error {
	body, err := json.Marshal(WebhookBody{ID: d.ID, Notice: d.Notice, Subject: msg.Subject, Text: msg.Text})
	if err != nil {
		return &PermanentError{err}
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	hook, ok := w.Hooks[d.Destination]
	if !ok {
		return &PermanentError{fmt.Errorf("no webhook named %s", d.Destination)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL.Reveal(), bytes.NewReader(body))
	if err != nil {
		return &PermanentError{fmt.Errorf("webhook %s: bad URL", d.Destination)} // never quote the URL: it may hold a token
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Keyward")
	req.Header.Set("X-Keyward-Timestamp", ts)
	req.Header.Set("X-Keyward-Delivery", d.ID)
	req.Header.Set("Idempotency-Key", d.ID)
	req.Header.Set("X-Keyward-Event", d.Notice.Event)
	if !hook.Secret.IsZero() {
		req.Header.Set("X-Keyward-Signature", Sign(hook.Secret, ts, body))
	}
	return post(w.Client, req)
}

// post sends a request: 2xx is delivered; 429 and 5xx are worth a retry; any other answer is not.
// Its errors name the host only: the URL's path and query may be the secret (Slack's always is).
func post(client *http.Client, req *http.Request) error {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return hostOnly(req.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("%s answered %s", req.URL.Host, resp.Status)
	}
	return &PermanentError{fmt.Errorf("%s answered %s", req.URL.Host, resp.Status)}
}

// Slack posts the text of a notice to Slack-compatible incoming webhooks (the URL is the secret).
type Slack struct {
	Client *http.Client
	URLs   map[string]secret.Value // route destination (a name) → webhook URL
}

// Name implements Channel.
func (s *Slack) Name() string { return "slack" }

// Send implements Channel.
func (s *Slack) Send(ctx context.Context, d Delivery, msg Message) error {
	u, ok := s.URLs[d.Destination]
	if !ok {
		return &PermanentError{fmt.Errorf("no Slack webhook named %s", d.Destination)}
	}
	body, _ := json.Marshal(map[string]string{"text": "*" + msg.Subject + "*\n" + msg.Text})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.Reveal(), bytes.NewReader(body))
	if err != nil {
		return &PermanentError{fmt.Errorf("Slack webhook %s: bad URL", d.Destination)} // never quote the URL: it is the secret
	}
	req.Header.Set("Content-Type", "application/json")
	return post(s.Client, req) // its errors name the host only: the URL's path is the secret
}

// SMTP sends e-mail through a relay: STARTTLS when StartTLS is set (the configuration's default),
// and PLAIN authentication when a username is set (Go's client refuses it without TLS, except to
// localhost).
type SMTP struct {
	Addr      string // host:port
	From      string
	Username  string
	Password  secret.Value
	StartTLS  bool
	TLSConfig *tls.Config // nil: the system's roots, for the relay's host name
}

// Name implements Channel.
func (s *SMTP) Name() string { return channelEmail }

// Send implements Channel.
func (s *SMTP) Send(ctx context.Context, d Delivery, msg Message) error {
	raw, err := MIME(s.From, d.Destination, d.ID, msg)
	if err != nil {
		return &PermanentError{err}
	}
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return &PermanentError{fmt.Errorf("smtp address %q: %w", s.Addr, err)}
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", s.Addr, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	defer c.Close()
	if s.StartTLS {
		cfg := s.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("smtp %s: STARTTLS: %w", s.Addr, err)
		}
	}
	if s.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password.Reveal(), host)); err != nil {
			return &PermanentError{fmt.Errorf("smtp %s: authentication refused: %w", s.Addr, err)}
		}
	}
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", s.Addr, err)
	}
	if err := c.Rcpt(d.Destination); err != nil {
		return fmt.Errorf("smtp %s: RCPT TO %s: %w", s.Addr, d.Destination, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", s.Addr, err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	return c.Quit()
}

// MIME renders a message as a multipart/alternative e-mail (text and HTML). The Message-ID is
// derived from the delivery's id, so that a resent mail is recognisable as the same one.
func MIME(from, to, id string, msg Message) ([]byte, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	header := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@keyward>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=%s\r\n\r\n",
		from, to, mime.QEncoding.Encode("utf-8", msg.Subject), time.Now().UTC().Format(time.RFC1123Z), id, mw.Boundary())
	for _, part := range []struct{ kind, body string }{{"text/plain", msg.Text}, {"text/html", msg.HTML}} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {part.kind + "; charset=utf-8"}, "Content-Transfer-Encoding": {"8bit"}})
		if err != nil {
			return nil, err
		}
		if _, err := pw.Write([]byte(strings.ReplaceAll(part.body, "\n", "\r\n"))); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append([]byte(header), buf.Bytes()...), nil
}

// hostOnly says why a request to u failed, naming u's host and nothing else of it. A *url.Error's
// text is the whole URL, so its cause is taken instead, and any trace of the URL in that cause is
// cut out as well. The result does not wrap err, so that no caller can reach the URL through it.
func hostOnly(u *url.URL, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	for _, part := range []string{u.String(), u.RequestURI(), u.EscapedPath(), u.Path, u.RawQuery, u.User.String()} {
		if part != "" && part != "/" {
			msg = strings.ReplaceAll(msg, part, "[redacted]")
		}
	}
	return &OutboundError{Host: u.Host, Reason: msg, Timeout: isTimeout(err)}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &t) && t.Timeout())
}

// OutboundError is a call to another system that did not get an answer. It names the host only.
type OutboundError struct {
	Host    string
	Reason  string
	Timeout bool
}

func (e *OutboundError) Error() string { return "post to " + e.Host + ": " + e.Reason }
