package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/notify/awsnotify"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
)

// notifier queues notices as the configuration routes them; nil when no channel is configured.
func (a *app) notifier(db *store.DB) *notify.Notifier {
	n := a.cfg.Notify
	r := &notify.Router{OwnerEvents: n.OwnerEvents}
	for _, e := range n.Admin.Emails {
		r.Global = append(r.Global, notify.Route{Channel: "email", Destination: e, Events: n.Admin.Events})
	}
	for _, e := range n.Security.Emails {
		r.Global = append(r.Global, notify.Route{Channel: "email", Destination: e, Events: []string{notify.KeyLeaked}})
	}
	for _, t := range n.SNS {
		r.Global = append(r.Global, notify.Route{Channel: "sns", Destination: t.TopicARN, Events: t.Events})
	}
	for _, h := range n.Webhooks {
		r.Global = append(r.Global, notify.Route{Channel: "webhook", Destination: h.DestinationName(), Events: h.Events})
	}
	for _, s := range n.Slack {
		r.Global = append(r.Global, notify.Route{Channel: "slack", Destination: s.Name, Events: s.Events})
	}
	for _, o := range n.Owners {
		r.Owners = append(r.Owners, notify.OwnerRoute{Account: o.Account, UserGlob: o.UserGlob, Emails: o.Emails, Events: o.Events})
	}
	for _, t := range n.Teams {
		r.Teams = append(r.Teams, notify.TeamRoute{Team: t.Team, Emails: t.Emails, Events: t.Events})
	}
	if len(r.Global) == 0 && len(r.Owners) == 0 && len(r.Teams) == 0 && !emailConfigured(n) {
		return nil
	}
	return &notify.Notifier{Outbox: db.Outbox(), Router: r, TeamOf: func(ctx context.Context, account, user string) (string, error) {
		t, err := db.Auth().TeamOf(ctx, vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: user})
		if errors.Is(err, auth.ErrNotFound) {
			return "", nil
		}
		return t.Name, err
	}}
}

// emailConfigured says whether e-mail can leave, so that owners named by tag can be told.
func emailConfigured(n config.Notify) bool { return n.Email.From != "" }

// dispatcher delivers the outbox through the configured channels.
func (a *app) dispatcher(ctx context.Context, db *store.DB, owner string, observe func(channel, outcome string)) (*notify.Dispatcher, error) {
	n := a.cfg.Notify
	tpl, err := notify.LoadTemplates(n.TemplatesDir)
	if err != nil {
		return nil, fmt.Errorf("notify.templates_dir: %w", err)
	}
	channels := map[string]notify.Channel{}
	if len(n.Webhooks) > 0 {
		hooks := map[string]notify.WebhookTarget{}
		for _, h := range n.Webhooks {
			hooks[h.DestinationName()] = notify.WebhookTarget{URL: h.URL, Secret: h.Secret}
		}
		channels["webhook"] = &notify.Webhook{Client: httpClient(), Hooks: hooks}
	}
	if len(n.Slack) > 0 {
		urls := map[string]secret.Value{}
		for _, s := range n.Slack {
			urls[s.Name] = s.URL
		}
		channels["slack"] = &notify.Slack{Client: httpClient(), URLs: urls}
	}
	if emailConfigured(n) && n.Email.Via == "smtp" {
		channels["email"] = &notify.SMTP{Addr: net.JoinHostPort(n.SMTP.Host, strconv.Itoa(n.SMTP.Port)), From: n.Email.From,
			Username: n.SMTP.Username, Password: n.SMTP.Password, StartTLS: n.SMTP.StartTLS}
	}
	if (emailConfigured(n) && n.Email.Via == "ses") || len(n.SNS) > 0 {
		cfg, err := a.awsConfig(ctx)
		if err != nil {
			return nil, err
		}
		if emailConfigured(n) && n.Email.Via == "ses" {
			channels["email"] = awsnotify.NewSES(cfg, n.Email.From)
		}
		if len(n.SNS) > 0 {
			channels["sns"] = awsnotify.NewSNS(cfg)
		}
	}
	return &notify.Dispatcher{Outbox: db.Outbox(), Channels: channels, Templates: tpl, Owner: owner, Log: a.log, Observe: observe}, nil
}

// httpClient is the client of webhooks: bounded in time, never following a redirect elsewhere
// with the signed body.
func httpClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// outboxCheck is the readiness condition on notifications: none waiting longer than stuck_after.
func outboxCheck(db *store.DB, stuckAfter time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		n, oldest, err := db.Outbox().Pending(ctx)
		if err != nil {
			return &httpapi.NotReady{Reason: "database", Err: err}
		}
		if n > 0 && time.Since(oldest) > stuckAfter {
			return &httpapi.NotReady{Reason: "notifications_stuck",
				Err: fmt.Errorf("%d notifications waiting, the oldest since %s (more than %s)", n, oldest.Format(time.RFC3339), stuckAfter)}
		}
		return nil
	}
}

// deliverOnce delivers what is due before a one-shot command exits; what cannot be delivered now
// waits in the outbox for serve (or the next run).
func (a *app) deliverOnce(ctx context.Context, db *store.DB, owner string) {
	if a.notifier(db) == nil {
		return
	}
	d, err := a.dispatcher(ctx, db, owner, nil)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, err = d.DeliverDue(ctx)
	}
	if err != nil {
		a.log.Warn("notifications not delivered yet; they wait in the outbox", "error", err.Error())
	}
}
