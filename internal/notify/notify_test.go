package notify_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func notice(event, id string) notify.Notice {
	return notify.Notice{ID: id, Event: event, Time: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), Account: "123456789012",
		User: "ci-deploy", Identity: "aws:123456789012:ci-deploy", OldKeyID: "AKIAOLDOLDOLDOLDOLD1", NewKeyID: "AKIANEWNEWNEWNEWNEW1"}
}

func TestRoutes(t *testing.T) {
	r := &notify.Router{
		Global: []notify.Route{{Channel: "email", Destination: "sec@example.com", Events: []string{"rotation.*"}},
			{Channel: "webhook", Destination: "https://hooks.example.com/k"}},
		Owners: []notify.OwnerRoute{{UserGlob: "ci-*", Emails: []string{"platform@example.com", "sec@example.com"}},
			{UserGlob: "ci-*", Account: "999999999999", Emails: []string{"other@example.com"}}},
		OwnerEvents: []string{"key.rotated"},
	}
	n := notice(notify.KeyRotated, "x")
	n.Owners = []string{"alice@example.com"}
	var got []string
	for _, rt := range r.Routes(n) {
		got = append(got, rt.Channel+":"+rt.Destination)
	}
	// sec@ is not told of key.rotated as admin, but is as an owner of ci-*; other@ owns another account's.
	want := []string{"webhook:https://hooks.example.com/k", "email:platform@example.com", "email:sec@example.com", "email:alice@example.com"}
	if !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v", got, want)
	}
	n.Event = notify.KeyDeleted
	got = got[:0]
	for _, rt := range r.Routes(n) {
		got = append(got, rt.Destination)
	}
	if slices.Contains(got, "alice@example.com") {
		t.Fatalf("a tag owner got an event outside owner_events: %v", got)
	}
}

func TestTemplates(t *testing.T) {
	tpl, err := notify.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := tpl.Render(notice(notify.KeyRotated, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "[Keyward] Access key rotated: ci-deploy (123456789012)" || !strings.Contains(msg.Text, "AKIANEWNEWNEWNEWNEW1") ||
		!strings.Contains(msg.HTML, "<code>AKIANEWNEWNEWNEWNEW1</code>") {
		t.Fatalf("rendered: %+v", msg)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "subject.tmpl"), []byte("Rotation news for {{.Notice.User}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	tpl, err = notify.LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	if msg, _ := tpl.Render(notice(notify.KeyRotated, "n1")); msg.Subject != "Rotation news for ci-deploy" || msg.Text == "" {
		t.Fatalf("overridden subject: %+v", msg)
	}
	if err := os.WriteFile(filepath.Join(dir, "html.tmpl"), []byte("{{.Nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := notify.LoadTemplates(dir); err == nil || !strings.Contains(err.Error(), "html.tmpl") {
		t.Fatalf("a broken template: %v", err)
	}
}

// hookServer is a webhook receiver that checks signatures and answers with the statuses given, then 200.
type hookServer struct {
	*httptest.Server
	secret   secret.Value
	mu       sync.Mutex
	statuses []int
	got      []notify.WebhookBody
	ids      []string
}

func newHookServer(t *testing.T, key secret.Value, statuses ...int) *hookServer {
	h := &hookServer{secret: key, statuses: statuses}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Keyward-Timestamp")
		if r.Header.Get("X-Keyward-Signature") != notify.Sign(h.secret, ts, body) {
			t.Errorf("bad signature on %s", body)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var b notify.WebhookBody
		if err := json.Unmarshal(body, &b); err != nil || b.ID != r.Header.Get("X-Keyward-Delivery") {
			t.Errorf("body %s: %v", body, err)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.ids = append(h.ids, b.ID)
		if len(h.statuses) > 0 {
			status := h.statuses[0]
			h.statuses = h.statuses[1:]
			w.WriteHeader(status)
			return
		}
		h.got = append(h.got, b)
	}))
	t.Cleanup(h.Close)
	return h
}

type world struct {
	outbox   *store.Outbox
	clock    *testenv.Clock
	notifier *notify.Notifier
	disp     *notify.Dispatcher
	outcomes []string
}

func newWorld(t *testing.T, d testenv.Database, routes []notify.Route, channels ...notify.Channel) *world {
	db := storetest.Open(t, d)
	w := &world{outbox: db.Outbox(), clock: testenv.NewClock(time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC))}
	tpl, err := notify.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	w.notifier = &notify.Notifier{Outbox: w.outbox, Router: &notify.Router{Global: routes}, Now: w.clock.Now}
	chans := map[string]notify.Channel{}
	for _, c := range channels {
		chans[c.Name()] = c
	}
	w.disp = &notify.Dispatcher{Outbox: w.outbox, Channels: chans, Templates: tpl, Owner: "test", Now: w.clock.Now,
		Observe: func(channel, outcome string) { w.outcomes = append(w.outcomes, channel+":"+outcome) }}
	return w
}

func (w *world) deliver(t *testing.T) int {
	t.Helper()
	n, err := w.disp.DeliverDue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWebhookRetriesUntilDelivered: a receiver that fails twice gets the notice on the third try,
// after the backoff, with the same idempotency id each time; the same notice queued twice goes once.
func TestWebhookRetriesUntilDelivered(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		key := secret.New("webhook-signing-key-0123456789")
		hook := newHookServer(t, key, http.StatusServiceUnavailable, http.StatusTooManyRequests)
		w := newWorld(t, d, []notify.Route{{Channel: "webhook", Destination: "ops-hook", Events: []string{"key.*"}}},
			&notify.Webhook{Hooks: map[string]notify.WebhookTarget{"ops-hook": {URL: secret.New(hook.URL), Secret: key}}})
		ctx := context.Background()
		for range 2 {
			if err := w.notifier.Notify(ctx, notice(notify.KeyRotated, "key.rotated|AKIANEW")); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.notifier.Notify(ctx, notice(notify.RotationFailed, "failed|1")); err != nil { // not routed
			t.Fatal(err)
		}
		if n, oldest, _ := w.outbox.Pending(ctx); n != 1 || !oldest.Equal(w.clock.Now()) {
			t.Fatalf("pending %d since %v, want 1 since now", n, oldest)
		}
		for range 2 { // twice: nothing is due until the backoff runs out
			if w.deliver(t) != 0 {
				t.Fatal("delivered before its backoff ran out")
			}
		}
		w.clock.Add(31 * time.Second)
		if w.deliver(t) != 0 {
			t.Fatal("the second attempt should have met the 429")
		}
		w.clock.Add(61 * time.Second)
		if w.deliver(t) != 1 {
			t.Fatal("the third attempt was not delivered")
		}
		if len(hook.ids) != 3 || hook.ids[0] != hook.ids[1] || hook.ids[1] != hook.ids[2] || len(hook.got) != 1 {
			t.Fatalf("ids %v, delivered %d", hook.ids, len(hook.got))
		}
		if got := hook.got[0]; got.Event != notify.KeyRotated || got.NewKeyID != "AKIANEWNEWNEWNEWNEW1" || got.Subject == "" {
			t.Fatalf("delivered %+v", got)
		}
		if n, _, _ := w.outbox.Pending(ctx); n != 0 {
			t.Fatalf("%d still pending", n)
		}
		if fmt.Sprint(w.outcomes) != "[webhook:retry webhook:retry webhook:sent]" {
			t.Fatalf("outcomes %v", w.outcomes)
		}
	})
}

// TestPermanentRefusalGivesUp: a 400 is not retried; the delivery is dead and no longer pending.
func TestPermanentRefusalGivesUp(t *testing.T) {
	key := secret.New("webhook-signing-key-0123456789")
	hook := newHookServer(t, key, http.StatusBadRequest)
	w := newWorld(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "n.db")},
		[]notify.Route{{Channel: "webhook", Destination: "ops-hook"}},
		&notify.Webhook{Hooks: map[string]notify.WebhookTarget{"ops-hook": {URL: secret.New(hook.URL), Secret: key}}})
	if err := w.notifier.Notify(context.Background(), notice(notify.KeyDeleted, "deleted|1")); err != nil {
		t.Fatal(err)
	}
	w.deliver(t)
	w.clock.Add(24 * time.Hour)
	w.deliver(t)
	if len(hook.ids) != 1 || fmt.Sprint(w.outcomes) != "[webhook:dead]" {
		t.Fatalf("attempts %d, outcomes %v", len(hook.ids), w.outcomes)
	}
	if n, _, _ := w.outbox.Pending(context.Background()); n != 0 {
		t.Fatalf("%d pending after giving up", n)
	}
}

// smtpServer is an SMTP server (emersion/go-smtp) that requires STARTTLS and PLAIN authentication.
type smtpServer struct {
	addr   string
	roots  *x509.CertPool
	mu     sync.Mutex
	mails  []string
	rcpts  []string
	authed []string
}

type smtpSession struct{ s *smtpServer }

func (x *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (x *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "keyward" || pass != "smtp-password" {
			return errors.New("bad credentials")
		}
		x.s.mu.Lock()
		x.s.authed = append(x.s.authed, user)
		x.s.mu.Unlock()
		return nil
	}), nil
}
func (x *smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	x.s.rcpts = append(x.s.rcpts, to)
	x.s.mu.Unlock()
	return nil
}
func (x *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	x.s.mu.Lock()
	x.s.mails = append(x.s.mails, string(b))
	x.s.mu.Unlock()
	return err
}
func (x *smtpSession) Reset()        {}
func (x *smtpSession) Logout() error { return nil }

func startSMTP(t *testing.T) *smtpServer {
	cert := testenv.SelfSignedServerCert(t)
	s := &smtpServer{roots: cert.Roots}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }))
	srv.Domain = "localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert.Cert}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

// TestEmailBySMTP delivers a notice to an SMTP server over STARTTLS with PLAIN authentication.
func TestEmailBySMTP(t *testing.T) {
	srv := startSMTP(t)
	ch := &notify.SMTP{Addr: srv.addr, From: "keyward@example.com", Username: "keyward", Password: secret.New("smtp-password"),
		StartTLS: true, TLSConfig: &tls.Config{ServerName: "localhost", RootCAs: srv.roots}}
	w := newWorld(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "n.db")},
		[]notify.Route{{Channel: "email", Destination: "owner@example.com"}}, ch)
	if err := w.notifier.Notify(context.Background(), notice(notify.KeyRotated, "key.rotated|AKIANEW")); err != nil {
		t.Fatal(err)
	}
	if w.deliver(t) != 1 {
		t.Fatalf("not delivered: %v", w.outcomes)
	}
	if len(srv.mails) != 1 || fmt.Sprint(srv.rcpts) != "[owner@example.com]" || fmt.Sprint(srv.authed) != "[keyward]" {
		t.Fatalf("server got %d mails to %v, authenticated %v", len(srv.mails), srv.rcpts, srv.authed)
	}
	mail := srv.mails[0]
	for _, want := range []string{"Subject: [Keyward] Access key rotated: ci-deploy (123456789012)", "Content-Type: text/plain",
		"Content-Type: text/html", "New key:   AKIANEWNEWNEWNEWNEW1", "From: keyward@example.com"} {
		if !strings.Contains(mail, want) {
			t.Errorf("mail lacks %q:\n%s", want, mail)
		}
	}
	// Without STARTTLS the server refuses to authenticate (go-smtp's default): nothing is delivered.
	plain := &notify.SMTP{Addr: srv.addr, From: "keyward@example.com", Username: "keyward", Password: secret.New("smtp-password")}
	w2 := newWorld(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "n.db")},
		[]notify.Route{{Channel: "email", Destination: "owner@example.com"}}, plain)
	_ = w2.notifier.Notify(context.Background(), notice(notify.KeyRotated, "key.rotated|AKIANEW"))
	if w2.deliver(t) != 0 || len(srv.authed) != 1 {
		t.Fatalf("authenticated without TLS: %v", w2.outcomes)
	}
}

// TestSlack posts the notice's text to an incoming webhook; a failure names the host, never the URL.
func TestSlack(t *testing.T) {
	var mu sync.Mutex
	var texts []string
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Text string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.URL.Path != "/services/T0/B0/sekrit" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		texts = append(texts, body.Text)
	}))
	defer srv.Close()
	ch := &notify.Slack{URLs: map[string]secret.Value{"platform": secret.New(srv.URL + "/services/T0/B0/sekrit")}}
	msg := notify.Message{Subject: "[Keyward] Key rotation failed: ci-deploy", Text: "The old key was left as it was."}
	err := ch.Send(context.Background(), notify.Delivery{ID: "d1", Destination: "platform"}, msg)
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("a 500: %v (must fail, without the URL's secret path)", err)
	}
	if err := ch.Send(context.Background(), notify.Delivery{ID: "d1", Destination: "platform"}, msg); err != nil {
		t.Fatal(err)
	}
	if len(texts) != 1 || !strings.Contains(texts[0], "*[Keyward] Key rotation failed: ci-deploy*") || !strings.Contains(texts[0], "left as it was") {
		t.Fatalf("Slack got %q", texts)
	}
	var perm *notify.PermanentError
	if err := ch.Send(context.Background(), notify.Delivery{ID: "d2", Destination: "unknown"}, msg); !errors.As(err, &perm) {
		t.Fatalf("an unknown Slack route: %v", err)
	}
}

// TestFailedPostsNeverShowTheURL: when the network fails — connection refused, a TLS failure, a
// timeout — a Slack webhook's URL (whose path is its secret) and a webhook URL carrying a token reach
// no log line, no error and no outbox column: errors name the host only.
func TestFailedPostsNeverShowTheURL(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String()
	refused.Close()
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer untrusted.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	const slackPath, hookPath, hookToken = "/services/T0/B0/slack-sekrit-path", "/hooks/hook-sekrit-path", "hook-sekrit-token"
	for name, base := range map[string]string{"refused": refusedURL, "tls": untrusted.URL, "timeout": slow.URL} {
		t.Run(name, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				var logs testenv.SyncBuffer
				client := &http.Client{Timeout: 300 * time.Millisecond}
				w := newWorld(t, d, []notify.Route{{Channel: "slack", Destination: "platform"}, {Channel: "webhook", Destination: "ops-hook"}},
					&notify.Slack{Client: client, URLs: map[string]secret.Value{"platform": secret.New(base + slackPath)}},
					&notify.Webhook{Client: client, Hooks: map[string]notify.WebhookTarget{
						"ops-hook": {URL: secret.New(base + hookPath + "?token=" + hookToken), Secret: secret.New("signing-key-0123456789")}}})
				w.disp.Log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				if err := w.notifier.Notify(context.Background(), notice(notify.RotationFailed, "failed|1")); err != nil {
					t.Fatal(err)
				}
				if n := w.deliver(t); n != 0 {
					t.Fatalf("%d delivered through a failing network", n)
				}
				if fmt.Sprint(w.outcomes) != "[slack:retry webhook:retry]" && fmt.Sprint(w.outcomes) != "[webhook:retry slack:retry]" {
					t.Fatalf("outcomes %v", w.outcomes)
				}
				host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
				if !strings.Contains(logs.String(), host) {
					t.Fatalf("the log does not name the host %s: %s", host, logs.String())
				}
				everything := logs.String() + storetest.Dump(t, d)
				for _, s := range []string{"sekrit", "slack-sekrit-path", hookPath, hookToken} {
					if strings.Contains(everything, s) {
						t.Fatalf("%q reached the log or the database:\n%s", s, logs.String())
					}
				}
			})
		})
	}
}

// TestTeamRoutes: a notice about an identity a Keyward team owns goes to the team's addresses (the
// team found in the database), for the events the team wants; one about another identity does not.
func TestTeamRoutes(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := storetest.Open(t, d)
		if err := db.Auth().CreateTeam(ctx, auth.Team{Name: "deploy", CreatedAt: time.Now(),
			Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: "123456789012", UserName: "ci-deploy"}}); err != nil {
			t.Fatal(err)
		}
		n := &notify.Notifier{Outbox: db.Outbox(), Router: &notify.Router{Teams: []notify.TeamRoute{
			{Team: "deploy", Emails: []string{"deploy-oncall@example.com"}, Events: []string{"rotation.*"}},
			{Team: "other", Emails: []string{"other@example.com"}}}},
			TeamOf: func(ctx context.Context, account, user string) (string, error) {
				team, err := db.Auth().TeamOf(ctx, vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: user})
				if errors.Is(err, auth.ErrNotFound) {
					return "", nil
				}
				return team.Name, err
			}}
		for _, nt := range []notify.Notice{notice(notify.RotationFailed, "f1"), notice(notify.KeyRotated, "r1")} {
			if err := n.Notify(ctx, nt); err != nil {
				t.Fatal(err)
			}
		}
		stranger := notice(notify.RotationFailed, "f2")
		stranger.User, stranger.Identity = "someone-else", "aws:123456789012:someone-else"
		if err := n.Notify(ctx, stranger); err != nil {
			t.Fatal(err)
		}
		ds, err := db.Outbox().Claim(ctx, "test", time.Now().Add(time.Hour), time.Now().Add(2*time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].Destination != "deploy-oncall@example.com" || ds[0].Notice.Event != notify.RotationFailed ||
			ds[0].Notice.Team != "deploy" {
			t.Fatalf("deliveries: %+v", ds)
		}
		// Claimed by "test" for two hours: another process gets it only when "test" is known gone.
		at := time.Now().Add(90 * time.Minute)
		if again, err := db.Outbox().Claim(ctx, "other", at, at.Add(time.Hour), 10, "someone-gone"); err != nil || len(again) != 0 {
			t.Fatalf("a live claim was taken: %+v %v", again, err)
		}
		if again, err := db.Outbox().Claim(ctx, "other", at, at.Add(time.Hour), 10, "someone-gone", "test"); err != nil || len(again) != 1 {
			t.Fatalf("the claim of a process gone was not taken over: %+v %v", again, err)
		}
	})
}
