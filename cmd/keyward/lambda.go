package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/spf13/cobra"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
)

// lambdaBootstrap is the name AWS Lambda's provided.al2023 runtime starts: the binary packaged under
// that name runs as the handler (`keyward lambda`) without arguments.
const lambdaBootstrap = "bootstrap"

// isLambdaBootstrap says whether this process is the binary started as a Lambda function's bootstrap.
func isLambdaBootstrap(args []string) bool {
	return len(args) == 1 && filepath.Base(args[0]) == lambdaBootstrap && os.Getenv("AWS_LAMBDA_RUNTIME_API") != ""
}

// LambdaResult is what one invocation answers (and logs): the pass's counts and what it could not do.
type LambdaResult struct {
	Summary     rotation.Summary `json:"summary"`
	Errors      []string         `json:"errors,omitempty"`
	Interrupted int              `json:"interrupted,omitempty"`
	Sent        int              `json:"notifications_sent"`
	TookMS      int64            `json:"took_ms"`
}

func (a *app) lambdaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "lambda",
		Short: "Run as an AWS Lambda handler (provided.al2023): one rotation pass per invocation, on a PostgreSQL vault",
		Long: `Run as an AWS Lambda handler, the shape of AWS's sample rotation solution: an EventBridge
schedule invokes the function, and each invocation makes one rotation pass against a PostgreSQL vault,
delivers the notifications that are due, ships the audit trail to its sinks, signs a checkpoint and
puts the pass's metrics into CloudWatch. Package the binary as "bootstrap" (it then runs this
command by itself); configure it with KEYWARD_* variables, the DSN with KEYWARD_VAULT_DSN_SECRET_ARN
(vault.dsn_secret_arn). See deploy/cloudformation.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := a.loadConfig(); err != nil {
				return err
			}
			h, closeDB := a.lambdaHandler()
			defer closeDB()
			lambda.StartWithOptions(h, lambda.WithContext(cmd.Context()))
			return nil
		}),
	}
}

// lambdaPass makes the invocation's pass. The invocation leads the scheduler for it, so that status
// and /healthz/rotation of any replica see the pass and its end; a serve that leads meanwhile keeps
// leading (and the pass is not recorded).
func (a *app) lambdaPass(ctx context.Context, c *components, start time.Time) (rotation.Report, error) {
	c.metrics.PassStarted(start)
	fence, leads, _ := c.member.Store.Lead(ctx, cluster.Scheduler, c.member.ID, start, start.Add(15*time.Minute))
	if leads {
		c.member.RecordPass(ctx, fence, cluster.PassReport{StartedAt: start, At: start})
	}
	rep, err := c.engine.Pass(ctx, rotation.PassOptions{Concurrency: a.cfg.Rotation.Concurrency})
	if leads {
		c.member.RecordPass(ctx, fence, cluster.PassReport{StartedAt: start, At: time.Now(), Done: rep.Summary.Scanned,
			Known: rep.Summary.Scanned, Finished: true, Unlisted: len(rep.Errors)})
		_ = c.member.Store.Resign(context.WithoutCancel(ctx), cluster.Scheduler, c.member.ID)
	}
	return rep, err
}

// lambdaHandler returns the function each invocation calls, and what closes the database. The parts
// are built at the first invocation and kept while the function's instance is warm: the next
// invocations reuse the database pool and the cloud clients.
func (a *app) lambdaHandler() (func(ctx context.Context, event json.RawMessage) (LambdaResult, error), func()) {
	var (
		once     sync.Once
		c        *components
		buildErr error
	)
	handler := func(ctx context.Context, event json.RawMessage) (LambdaResult, error) {
		start := time.Now()
		if a.cfg.Vault.Driver != store.Postgres {
			return LambdaResult{}, fmt.Errorf("vault.driver %q: the Lambda handler needs postgres (a function's disk does not outlive it)", a.cfg.Vault.Driver)
		}
		once.Do(func() { c, buildErr = a.build(ctx, nil) })
		if buildErr != nil {
			return LambdaResult{}, buildErr
		}
		rep, err := a.lambdaPass(ctx, c, start)
		res := LambdaResult{Summary: rep.Summary, Errors: rep.Errors, Interrupted: rep.Interrupted}
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		c.afterPass(start, time.Now(), rep, err)
		// What serve does in the background, done once before the invocation ends.
		if res.Sent, err = c.dispatcher.DeliverDue(ctx); err != nil {
			res.Errors = append(res.Errors, "notifications: "+err.Error())
		}
		if c.shipper != nil {
			if err := c.shipper.Ship(ctx); err != nil {
				res.Errors = append(res.Errors, "audit sinks: "+err.Error())
			}
		}
		if _, err := audit.New(c.db.Audit(), nil, a.log).Seal(ctx); err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		a.checkpoint(ctx, c.signer, c.db)
		res.TookMS = time.Since(start).Milliseconds()
		a.log.Info("lambda invocation finished", "rotated", res.Summary.Rotated, "failed", res.Summary.Failed,
			"blocked", res.Summary.Blocked, "notifications_sent", res.Sent, "took_ms", res.TookMS)
		if len(res.Errors) > 0 && rep.Summary.Scanned == 0 {
			// Nothing could be visited: the invocation failed, and Lambda's own retry and metrics say so.
			return res, errors.New("the pass could not run: " + res.Errors[0])
		}
		return res, nil
	}
	return handler, func() {
		if c != nil {
			c.engine.OnDemand.Stop()
			closeQuietly(c.db)
		}
	}
}
