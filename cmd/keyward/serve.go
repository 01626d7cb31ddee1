package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/metrics/awsmetrics"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/vault"
	"github.com/keyward/keyward/internal/web"
)

func (a *app) serveCommand() *cobra.Command {
	var demo bool
	cmd := &cobra.Command{
		Use:   "serve [--demo]",
		Short: "Run the Keyward service: migrate, rotate on schedule, serve HTTP until SIGINT or SIGTERM",
		Long: `Run the Keyward service: migrate the database, make a rotation pass every rotation.interval,
and serve HTTP on server.listen until SIGINT or SIGTERM.

--demo needs no AWS account and no configuration: a simulated cloud of ten users whose keys have
various ages, a policy in minutes so the whole lifecycle can be watched, and a vault in a new
temporary directory. It prints what happens after every pass.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if demo && a.logFormat == "" {
				a.logFormat = "text"
			}
			if err := a.loadConfig(); err != nil {
				return err
			}
			if !demo {
				return a.serve(cmd.Context(), nil, nil)
			}
			return a.serveDemo(cmd.Context())
		}),
	}
	cmd.Flags().BoolVar(&demo, "demo", false, "run on a simulated cloud with a policy in minutes (no AWS account, no configuration)")
	return cmd
}

// serveDemo runs serve --demo: a simulated cloud of ten users, a policy in minutes and a vault in a
// new temporary directory, with what happens printed after every pass.
func (a *app) serveDemo(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "keyward-demo-")
	if err != nil {
		return err
	}
	cfg, cfgPath, err := demoConfig(dir, a.cfg)
	if err != nil {
		return err
	}
	a.cfg = cfg
	addr, moved := freeListen(cfg.Server.Listen)
	if moved {
		fmt.Fprintf(a.stdout, "%s is taken: the demo listens on %s instead.\n", cfg.Server.Listen, addr)
	}
	cfg.Server.Listen = addr
	a.demoConfigPath, a.demoSetup = cfgPath, a.demoSeed
	fmt.Fprintf(a.stdout, "Keyward demo: open http://%s/ui/ in a browser (people and passwords below).\n\n", cfg.Server.Listen)
	c := demoCloud(time.Now())
	go demoConsumer(ctx, c)
	fmt.Fprintf(a.stdout, `Keyward demo — a simulated AWS account (%s) with 10 IAM users; nothing leaves this machine.
Policy in minutes: keys are replaced at %s, the old key deactivated %s later and deleted %s after that.
Watch: ci-deploy and partner-acme are due now; legacy-erp's old key stays in use (held);
break-glass is exempt; two-keys holds two active keys (blocked); fast-lane has a 2m tag.
Vault: %[5]s (its key beside it)
Try, in another terminal:  %[8]s vault list --config %[6]s
                           %[8]s vault get ci-deploy --config %[6]s
Health: http://%[7]s/healthz   Enter prints the whole table; Ctrl-C stops (the directory is kept).
After each pass: what changed.

`, demoAccount, cfg.Rotation.RotateAfter, cfg.Rotation.DeactivateAfter, cfg.Rotation.DeleteAfter,
		cfg.Vault.DSN.Reveal(), cfgPath, cfg.Server.Listen, a.selfCommand())
	var engine *rotation.Engine
	table := &demoTable{a: a}
	go table.onEnter(a.stdin)
	after := func(rep rotation.Report, _ error) {
		plans, _ := engine.PlanPass(context.Background(), rotation.PassOptions{})
		table.passed(rep.Summary, plans)
	}
	return a.serve(ctx, c, func(e *rotation.Engine) func(rotation.Report, error) { engine = e; return after })
}

// serve runs the service. provider overrides the configured cloud (the demo's); afterPass, when set,
// is given the engine and returns what to call after each pass.
func (a *app) serve(ctx context.Context, provider cloud.Provider, afterPass func(*rotation.Engine) func(rotation.Report, error)) error {
	a.serving = true
	a.log.Info("configuration loaded", "cloud", a.cfg.Cloud, "vault_driver", a.cfg.Vault.Driver,
		"key_source", a.cfg.Vault.MasterKey.Source, "listen", a.cfg.Server.Listen)
	for _, w := range a.cfg.Warnings() {
		if a.cfg.Cloud != "sim" { // the demo's policy in minutes is meant
			a.log.Warn("configuration", "warning", w)
		}
	}
	if a.cfg.Vault.Driver == store.SQLite {
		if path := store.SQLitePath(a.cfg.Vault.DSN.Reveal()); path != ":memory:" {
			release, err := lockSQLiteServe(path)
			if err != nil {
				return err
			}
			defer release()
		}
	}
	c, err := a.build(ctx, provider)
	if err != nil {
		return err
	}
	defer closeQuietly(c.db)
	if afterPass != nil {
		c.demoAfter = afterPass(c.engine)
	}
	if a.demoSetup != nil {
		if err := a.demoSetup(ctx, c); err != nil {
			return err
		}
	}
	return a.run(ctx, c)
}

// components are the parts of a serving process, built once from the configuration (build) and then
// run together (run).
type components struct {
	db         *store.DB
	vault      *vault.Vault
	engine     *rotation.Engine
	metrics    *metrics.Metrics
	signer     func(ctx context.Context) (audit.Signer, error)
	shipper    *audit.Shipper // nil: no sink besides the database
	dispatcher *notify.Dispatcher
	api        *httpapi.API
	started    time.Time // when this process began: the scheduler is not judged stalled before it could run
	scheduler  func(context.Context) (rotation.Health, error)
	member     *cluster.Member // this replica among those sharing the database
	inventory  *inventory.Reader
	reports    *report.Service
	ui         *web.UI
	demoAfter  func(rotation.Report, error)
	// cloudWatch, when metrics.cloudwatch.namespace is set, puts each pass's metrics there, and
	// cloudWatchBeat the heartbeat of a pass under way.
	cloudWatch     func(rotation.Report)
	cloudWatchBeat *awsmetrics.Publisher
}

// build opens the database (migrating it) and the vault, and wires every part over them.
func (a *app) build(ctx context.Context, provider cloud.Provider) (c *components, err error) {
	c = &components{started: time.Now()}
	if c.vault, c.db, err = a.openVault(ctx, dbMigrate); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeQuietly(c.db)
		}
	}()
	a.log.Info("vault open", "kek_id", c.vault.KEKID())
	if provider == nil {
		if provider, err = a.provider(ctx); err != nil {
			return nil, err
		}
	}
	dest, err := a.destination(ctx)
	if err != nil {
		return nil, err
	}
	c.metrics = serveMetrics(c.vault, c.db, provider)
	c.engine = a.newEngine(c.vault, c.db, cloud.Observed(provider, c.metrics.CloudCall), dest)
	c.inventory, c.reports = a.inventoryReader(c.engine, c.db, provider), a.reports(c.engine, c.db)
	c.engine.Observe = c.metrics.Rotation
	c.member = &cluster.Member{Store: c.db.Cluster(), ID: c.engine.Owner, Version: version, Lease: a.cfg.Rotation.Lease.Std(),
		Log: a.log, HolderGone: rotation.LocalOwnerGone}
	c.engine.OwnerGone = func(owner string) bool { return rotation.LocalOwnerGone(owner) || c.member.Gone(owner) }
	c.scheduler = a.schedulerHealth(c.member.Scheduler, c.started)
	if ns := a.cfg.Metrics.CloudWatch.Namespace; ns != "" {
		awsCfg, err := a.awsConfig(ctx)
		if err != nil {
			return nil, err
		}
		c.cloudWatchBeat = awsmetrics.New(awsCfg, ns)
		c.cloudWatch = a.cloudWatchPublisher(c.cloudWatchBeat, c)
	}
	if err := a.recordConfigLoaded(ctx, c.db, "engine:"+c.engine.Owner); err != nil {
		return nil, err
	}
	c.signer = a.auditSigner(c.vault)
	if c.shipper, err = a.shipper(ctx, c.db); err != nil {
		return nil, err
	}
	c.dispatcher, err = a.dispatcher(ctx, c.db, c.engine.Owner, func(channel, outcome string) {
		c.metrics.Notifications.WithLabelValues(channel, outcome).Inc()
	})
	if err != nil {
		return nil, err
	}
	c.dispatcher.Gone = c.member.GoneReplicas
	if err := a.faces(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// faces wires the two faces of the same services: the REST API and the web pages.
func (a *app) faces(ctx context.Context, c *components) (err error) {
	if c.api, err = a.api(ctx, c.vault, c.db, c.engine, c.reports); err != nil {
		return err
	}
	c.api.Cluster, c.api.Scheduler = c.member.Status, c.scheduler
	c.ui = &web.UI{Auth: c.api.Auth, Access: c.api.Access, Sessions: c.db.UISessions(), Log: a.log, Secure: a.cfg.Server.TLSCertFile != "",
		Trail: c.api.Trail, Vault: c.vault, Reports: c.reports,
		TTL: a.cfg.UI.SessionTTL.Std(), Idle: a.cfg.UI.IdleTimeout.Std()}
	if c.api.OIDC != nil { // a nil *OIDC in the interface would not be nil
		c.ui.SSO = c.api.OIDC
		// The pages' callback is beside the API's, at the origin the provider already knows.
		if origin, ok := strings.CutSuffix(a.cfg.Auth.OIDC.RedirectURL, "/v1/auth/oidc/callback"); ok {
			c.ui.ServerURL = origin
		}
	}
	return nil
}

// run starts the background work — checkpoints, audit sinks, notifications, retention, the
// rotation schedule — serves HTTP until ctx ends, then stops everything in the reverse order, the
// on-demand rotations before the database closes.
func (a *app) run(ctx context.Context, c *components) error {
	// The audit trail's end is signed every checkpoint_interval, and once more on the way out.
	stopCheckpoints := background(ctx, func(ctx context.Context) {
		every(ctx, a.cfg.Audit.CheckpointInterval.Std(), func() { a.checkpoint(context.WithoutCancel(ctx), c.signer, c.db) })
	})
	defer func() { stopCheckpoints(); a.checkpoint(context.Background(), c.signer, c.db) }()
	// On PostgreSQL, records appended by every replica are sealed into the chain within a second.
	if c.db.Driver() == store.Postgres {
		trail := audit.New(c.db.Audit(), nil, a.log)
		defer background(ctx, func(ctx context.Context) {
			every(ctx, time.Second, func() {
				if _, err := trail.Seal(ctx); err != nil && ctx.Err() == nil {
					a.log.Warn("audit trail not sealed", "error", err.Error())
				}
			})
		})()
	}
	// Notifications go from the database on their own schedule, from every replica (each claims its
	// own rows): one that is down never holds a rotation.
	defer background(ctx, func(ctx context.Context) { c.dispatcher.Run(ctx, a.cfg.Notify.Interval.Std()) })()
	// One replica at a time leads the rest (see lead); a pass cut short resumes from its records at
	// the next start, or on the next leader.
	defer background(context.WithoutCancel(ctx), func(ctx context.Context) {
		c.member.Run(ctx, func(ctx context.Context, fence int64) { a.lead(ctx, c, fence) })
	})()
	// Rotations asked for through the API, stopped and waited for before the database closes.
	defer c.engine.OnDemand.Stop()
	return a.listen(ctx, a.listeners(c))
}

// lead runs what one replica at a time runs, until ctx ends (shutdown, or the leadership lost):
// the rotation schedule, the audit trail's sinks (so that each gets each record once), the retention
// purge and the inventory refresh. Each finished pass is recorded with the term's fence.
func (a *app) lead(ctx context.Context, c *components, fence int64) {
	var wg sync.WaitGroup
	if c.shipper != nil {
		wg.Go(func() { c.shipper.Run(ctx, a.cfg.Audit.ShipInterval.Std()) })
	}
	// What only grows is purged past the retention horizon, at start and every interval.
	wg.Go(func() { every(ctx, a.cfg.Retention.Interval.Std(), func() { a.retain(ctx, c.db) }) })
	// The inventory is read again, and the day's compliance summary stored, every reports.interval.
	if i := a.cfg.Reports.Interval.Std(); i > 0 {
		wg.Go(func() { every(ctx, i, func() { a.refreshReports(ctx, c) }) })
	}
	// The pass's heartbeat: its start, its progress every few seconds and its end, where every
	// replica reads them (the scheduler's health is progress, not completion).
	beat := c.member.Heartbeat(fence, 0)
	wg.Go(func() { beat.Run(ctx) })
	if c.cloudWatchBeat != nil {
		wg.Go(func() { a.cloudWatchHeartbeat(ctx, c.cloudWatchBeat, beat) })
	}
	wg.Go(func() {
		defer c.metrics.PassStopped()
		c.engine.Schedule(ctx, a.cfg.Rotation.Interval.Std(), rotation.PassOptions{Concurrency: a.cfg.Rotation.Concurrency},
			rotation.PassEvents{
				Started: func(at time.Time) { c.metrics.PassStarted(at); beat.Started(ctx, at) },
				Progress: func(at time.Time, done, known int) {
					c.metrics.PassProgress(at, done, known)
					beat.Progress(at, done, known)
				},
				Finished: func(started, at time.Time, rep rotation.Report, err error) {
					beat.Finished(context.WithoutCancel(ctx), started, at, rep.Summary.Scanned, len(rep.Errors))
					c.afterPass(started, at, rep, err)
				},
			})
	})
	wg.Wait()
}

// afterPass is told of every finished pass: the metrics, CloudWatch, and the demo's table.
func (c *components) afterPass(started, at time.Time, rep rotation.Report, err error) {
	sum := rep.Summary
	c.metrics.Pass(started, at, map[string]int{"rotated": sum.Rotated, "failed": sum.Failed, "blocked": sum.Blocked, "held": sum.Held,
		"deactivated": sum.Deactivated, "deleted": sum.Deleted, "exempt": sum.Exempt, "skipped": sum.Skipped})
	if c.cloudWatch != nil {
		c.cloudWatch(rep)
	}
	if c.demoAfter != nil {
		c.demoAfter(rep, err)
	}
}

// cloudWatchPublisher puts a finished pass's counts into CloudWatch, with each account's oldest
// current key and how many are overdue (older than rotation.rotate_after and one interval). A
// CloudWatch that does not answer costs a pass at most 30 s and a warning, never the pass.
func (a *app) cloudWatchPublisher(p *awsmetrics.Publisher, c *components) func(rotation.Report) {
	overdue := a.cfg.Rotation.RotateAfter.Std() + a.cfg.Rotation.Interval.Std()
	return func(rep rotation.Report) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		now := time.Now()
		pass := awsmetrics.Pass{At: now, Rotated: rep.Summary.Rotated, Failed: rep.Summary.Failed, Blocked: rep.Summary.Blocked, Visited: rep.Summary.Scanned,
			Held: rep.Summary.Held, Accounts: map[string]awsmetrics.Account{}}
		versions, err := c.vault.List(ctx)
		if err != nil {
			a.log.Warn("cloudwatch metrics not sent", "error", err)
			return
		}
		for _, v := range versions {
			if v.State != vault.StateCurrent {
				continue
			}
			acc, age := pass.Accounts[v.Identity.AccountID], now.Sub(v.CreatedAt)
			acc.OldestKeyAge = max(acc.OldestKeyAge, age)
			if age > overdue {
				acc.Overdue++
			}
			pass.Accounts[v.Identity.AccountID] = acc
		}
		if n, _, err := c.db.Outbox().Pending(ctx); err == nil {
			pass.NotificationsPending = n
		}
		if err := p.Publish(ctx, pass); err != nil {
			a.log.Warn("cloudwatch metrics not sent", "error", err)
		}
	}
}

// cloudWatchHeartbeat puts the progress of a pass under way into CloudWatch once a minute, so that
// the keyward-silent alarm sees a long pass making progress.
func (a *app) cloudWatchHeartbeat(ctx context.Context, p *awsmetrics.Publisher, beat *cluster.Heartbeat) {
	var sent time.Time
	var sentDone int
	every(ctx, time.Minute, func() {
		r, running := beat.Current()
		if !running || !r.At.After(sent) {
			return
		}
		if r.StartedAt.After(sent) {
			sentDone = 0 // a new pass
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.Heartbeat(cctx, r.At, r.Done-sentDone); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("cloudwatch heartbeat not sent", "error", err)
			}
			return
		}
		sent, sentDone = r.At, r.Done
	})
}

// listeners are the HTTP servers: the API and probes on server.listen, and the metrics there or on
// server.metrics_listen.
func (a *app) listeners(c *components) []*listener {
	sc := a.cfg.Server
	metricsElsewhere := sc.MetricsListen != ""
	handler := httpapi.Handler(httpapi.Options{Log: a.log, Metrics: c.metrics, MetricsToken: sc.MetricsToken,
		MetricsElsewhere: metricsElsewhere, API: c.api, UI: c.ui.Handler(),
		Checks: []httpapi.Check{
			{Name: "database", Func: databaseCheck(c.db)},
			{Name: "signing_key", Func: signingKeyCheck(c.api.Auth.Tokens().Ready)},
		},
		RotationChecks: []httpapi.Check{
			{Name: "scheduler", Func: schedulerCheck(c.scheduler)},
			{Name: "notifications", Func: outboxCheck(c.db, a.cfg.Notify.StuckAfter.Std())},
		}})
	servers := []*listener{{key: "server.listen", addr: sc.Listen, handler: handler, tls: sc.TLSCertFile != ""}}
	if metricsElsewhere {
		servers = append(servers, &listener{key: "server.metrics_listen", addr: sc.MetricsListen, tls: sc.TLSCertFile != "",
			handler: httpapi.Handler(httpapi.Options{Log: a.log, Metrics: c.metrics, MetricsToken: sc.MetricsToken})})
	}
	return servers
}

// every runs fn now and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshReports reads the inventory of every account and stores the day's compliance summary.
func (a *app) refreshReports(ctx context.Context, c *components) {
	accounts, err := c.inventory.Read(ctx, "", nil)
	for _, acc := range accounts {
		if err := c.db.Inventory().SaveAccount(ctx, acc); err != nil {
			a.log.Warn("inventory not stored", "account", acc.ID, "error", err.Error())
		}
	}
	if err != nil {
		a.log.Warn("inventory not read in full", "error", err.Error())
	}
	if sum, err := c.reports.Snapshot(ctx); err != nil {
		a.log.Warn("compliance summary not stored", "error", err.Error())
	} else {
		a.log.Info("inventory read", "accounts", len(accounts), "users", sum.Users, "compliant_percent", sum.Percent)
	}
}

// listener is one HTTP server of serve's: the API, or the metrics on an address of their own.
type listener struct {
	key, addr string
	handler   http.Handler
	tls       bool
	srv       *http.Server
	served    chan error
}

// listen serves on every listener until ctx ends or one fails, then shuts them all down gracefully.
func (a *app) listen(ctx context.Context, servers []*listener) error {
	sc := a.cfg.Server
	failed := make(chan error, len(servers))
	for _, l := range servers {
		// Every phase of a request is bounded: a client that trickles its headers or body, or never
		// reads its answer, or sits idle, does not hold a connection for ever.
		l.srv = &http.Server{Handler: l.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: sc.ReadTimeout.Std(),
			WriteTimeout: sc.WriteTimeout.Std(), IdleTimeout: sc.IdleTimeout.Std(), MaxHeaderBytes: 64 << 10}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("listen on %s (%s): %w", l.addr, l.key, err)
		}
		defer ln.Close()
		a.log.Info("listening", "addr", ln.Addr().String(), "for", l.key)
		l.served = make(chan error, 1)
		go func() {
			var err error
			if l.tls {
				err = l.srv.ServeTLS(ln, sc.TLSCertFile, sc.TLSKeyFile)
			} else {
				err = l.srv.Serve(ln)
			}
			l.served <- err
			if !errors.Is(err, http.ErrServerClosed) {
				failed <- fmt.Errorf("serve %s: %w", l.key, err)
			}
		}()
	}
	select {
	case err := <-failed:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "timeout", sc.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), sc.ShutdownTimeout.Std())
	defer cancel()
	for _, l := range servers {
		if err := l.srv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("graceful shutdown: %w", err)
		}
		if err := <-l.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", l.key, err)
		}
	}
	a.log.Info("stopped")
	return nil
}

// retain purges what is past retention.horizon and refreshes the planner's statistics.
func (a *app) retain(ctx context.Context, db *store.DB) {
	now := time.Now()
	if p, err := db.Purge(ctx, now.Add(-a.cfg.Retention.Horizon.Std()), now); err != nil {
		if ctx.Err() == nil {
			a.log.Warn("purge failed", "error", err.Error())
		}
	} else if p != (store.Purged{}) {
		a.log.Info("purged", "notifications", p.Notifications, "login_failures", p.LoginFailures, "rotations", p.Rotations,
			"older_than", a.cfg.Retention.Horizon.String())
	}
	if err := db.Optimize(ctx); err != nil && ctx.Err() == nil {
		a.log.Warn("database statistics not refreshed", "error", err.Error())
	}
}

// api wires the REST API: authentication, access to teams' keys, SSO when configured.
func (a *app) api(ctx context.Context, v *vault.Vault, db *store.DB, engine *rotation.Engine, reports *report.Service) (*httpapi.API, error) {
	svc, err := a.authService(v, db, engine.Cloud)
	if err != nil {
		return nil, err
	}
	trail := a.trail(db)
	api := &httpapi.API{Auth: svc, Vault: v, Trail: trail,
		Access:       &access.Service{Auth: svc, Vault: v, Engine: engine, Audit: trail},
		AllowedCIDRs: config.Prefixes(a.cfg.Auth.AllowedCIDRs), TrustedProxies: config.Prefixes(a.cfg.Server.TrustedProxies),
		RatePerPrincipal: a.cfg.Server.RateLimit.PerPrincipal, RatePerIP: a.cfg.Server.RateLimit.PerIP, Version: version,
		Targets: engine.TargetStates, Inventory: db.Inventory(), Reports: reports}
	if o := a.cfg.Auth.OIDC; o.Issuer != "" {
		rules := make([]httpapi.OIDCRule, len(o.Rules))
		for i, r := range o.Rules {
			rules[i] = httpapi.OIDCRule{Group: r.Group, Role: auth.Role(r.Role), Teams: r.Teams}
		}
		if api.OIDC, err = httpapi.NewOIDC(ctx, o.Issuer, o.ClientID, o.ClientSecret.Reveal(), o.RedirectURL, o.GroupsClaim, rules, nil); err != nil {
			return nil, err
		}
	}
	return api, nil
}

// serveMetrics makes the metrics of a serving process: key ages read from the vault at each scrape,
// throttles from the cloud when it counts them.
func serveMetrics(v *vault.Vault, db *store.DB, provider cloud.Provider) *metrics.Metrics {
	src := metrics.Sources{KeyAges: func(ctx context.Context) ([]metrics.KeyAge, error) {
		versions, err := v.List(ctx)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		var ages []metrics.KeyAge
		for _, ver := range versions {
			if ver.State != vault.StateDestroyed {
				ages = append(ages, metrics.KeyAge{Account: ver.Identity.AccountID, User: ver.Identity.UserName,
					State: string(ver.State), Age: now.Sub(ver.CreatedAt)})
			}
		}
		return ages, nil
	}, OutboxPending: func(ctx context.Context) (float64, error) {
		n, _, err := db.Outbox().Pending(ctx)
		return float64(n), err
	}}
	if t, ok := provider.(interface{ Throttles() int64 }); ok {
		src.Throttles = func() float64 { return float64(t.Throttles()) }
	}
	return metrics.New(src)
}

// background runs fn in a goroutine under a context of its own (derived from ctx); the returned stop
// cancels it and waits until fn has returned.
func background(ctx context.Context, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	return func() { cancel(); <-done }
}
