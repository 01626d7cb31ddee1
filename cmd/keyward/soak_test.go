package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/testenv"
)

var soakRotations = flag.Int("soak", 0, "TestContinuitySoak: rotations to watch, with 5 crashes (0: a short run of 4 rotations and 2 crashes, as in CI)")

// The soak's policy, in seconds: a key is replaced after 3 s, deactivated 1 s later once quiet for
// 1 s, deleted 1 s after that; a pass every half second.
const (
	soakRotateAfter     = 3 * time.Second
	soakDeactivateAfter = time.Second
	soakDeleteAfter     = time.Second
	soakInterval        = 500 * time.Millisecond
)

// soakCred is what a consumer holds: a key, or a session.
type soakCred struct{ keyID, secret, token string }

// soakConsumer reads its source and calls STS with what it read, as a program would, re-reading after
// a failed call (as an SDK does on an auth error).
type soakConsumer struct {
	name  string
	read  func() (soakCred, error)
	useIt bool // call STS with it (moto's session credentials are placeholders it refuses: not for the session consumer)

	mu                                  sync.Mutex
	reads, readErrors, calls            int
	failed, failedAfterReread, deadCall int
	firstUse                            map[string]time.Time // key id → when this consumer first signed with it
	problems                            []string
}

func (c *soakConsumer) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// TestContinuitySoak rotates one identity again and again against moto (signatures checked) while
// six consumers use its key — two read Secrets Manager's AWSCURRENT, one the Actions secrets of a
// repository on the GitHub test server (as a workflow's job does when it starts), one a profile of
// a credentials file, one runs keyward credentials --type key, one --type session — and serve is
// SIGKILLed at random times. It asserts: no call with a
// key IAM reported inactive or deleted at that moment (moto itself accepts inactive keys, so each
// call is checked against IAM), no call failing after one re-read, no key alive longer than its
// policy allows plus a pass (and the time serve was down), one STS call per session lifetime, and
// AWSCURRENT equal to the vault's current key at the end. go test -run TestContinuitySoak -soak=50
// ./cmd/keyward is the long run; its figures are in docs/BENCHMARKS.md.
func TestContinuitySoak(t *testing.T) {
	rotations, crashes := 4, 2
	if *soakRotations > 0 {
		rotations, crashes = *soakRotations, 5
	}
	ctx := context.Background()
	port := testenv.FreePort(t)
	// A GitHub repository's Actions secrets and a credentials file on this host hold the key too.
	gh := testenv.NewGitHub(t)
	gh.AddRepo("acme/soak")
	gh.AddToken("ghp_soak0001", testenv.GitHubToken{Sees: []string{"repos/acme/soak"}, Write: true})
	dir := t.TempDir()
	credsFile, ghToken := filepath.Join(dir, "credentials"), filepath.Join(dir, "github-token")
	if err := os.WriteFile(ghToken, []byte("ghp_soak0001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newMotoWorld(t, "KEYWARD_CLOUD=aws", `KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}]`,
		"KEYWARD_SERVER_LISTEN=127.0.0.1:"+strconv.Itoa(port),
		"KEYWARD_ROTATION_ROTATE_AFTER=3s", "KEYWARD_ROTATION_DEACTIVATE_AFTER=1s", "KEYWARD_ROTATION_DELETE_AFTER=1s",
		"KEYWARD_ROTATION_QUIET_PERIOD=1s", "KEYWARD_ROTATION_INTERVAL=500ms", "KEYWARD_ROTATION_VERIFY_TIMEOUT=10s",
		`KEYWARD_DELIVERY_TARGETS=[{match: {team: soak}, kind: secrets_manager, name: "keyward/{account}/{user}"}, `+
			`{match: {team: soak}, kind: github_actions, repository: acme/soak, base_url: "`+gh.URL+`", token_file: "`+ghToken+`"}, `+
			`{match: {team: soak}, kind: credentials_file, path: "`+credsFile+`", profile: soak}]`,
		"KEYWARD_SERVER_RATE_LIMIT_PER_IP=0", "KEYWARD_SERVER_RATE_LIMIT_PER_PRINCIPAL=0")
	e := w.env
	const user, secretName = "soak-app", "keyward/123456789012/soak-app"
	if _, err := w.iam.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(user)}); err != nil {
		t.Fatal(err)
	}
	// AWS asks no permission for GetSessionToken; moto, evaluating policies, wants one.
	if _, err := w.iam.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(user), PolicyName: aws.String("sessions"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetSessionToken","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	e.must(t, 0, "", "team", "add", "soak", "--iam-user", user, "--account", "123456789012")
	created := e.must(t, 0, "", "apikey", "create", "--name", "soak", "--role", "member", "--team", "soak", "-o", "json")
	var apiKey struct{ Key string }
	if err := json.Unmarshal([]byte(created.stdout), &apiKey); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "soak.key")
	if err := os.WriteFile(keyFile, []byte(apiKey.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	server := "http://127.0.0.1:" + strconv.Itoa(port)

	s := &soak{t: t, w: w, e: e, user: user}
	s.start()
	// The team's first key: made by its first read, through the engine, and delivered.
	first := e.must(t, 0, "", "credentials", "soak", "--server", server, "--api-key-file", keyFile, "--type", "key")
	if !strings.Contains(first.stdout, `"AccessKeyId":"AKIA`) {
		t.Fatalf("first key: %s", first.stdout)
	}

	sm := secretsmanager.NewFromConfig(w.admin)
	fromSecret := func() (soakCred, error) {
		out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(secretName), VersionStage: aws.String("AWSCURRENT")})
		if err != nil {
			return soakCred{}, err
		}
		var d struct{ AccessKeyId, SecretAccessKey string }
		err = json.Unmarshal([]byte(aws.ToString(out.SecretString)), &d)
		return soakCred{keyID: d.AccessKeyId, secret: d.SecretAccessKey}, err
	}
	fromKeyward := func(typ string) func() (soakCred, error) {
		return func() (soakCred, error) {
			r := e.run(t, "", "credentials", "soak", "--server", server, "--api-key-file", keyFile, "--type", typ)
			if r.code != 0 {
				return soakCred{}, fmt.Errorf("keyward credentials: %s", strings.TrimSpace(r.stderr))
			}
			var d struct {
				AccessKeyId, SecretAccessKey, SessionToken, Expiration string
			}
			if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
				return soakCred{}, err
			}
			if exp, err := time.Parse(time.RFC3339, d.Expiration); err != nil || !exp.After(time.Now()) {
				return soakCred{}, fmt.Errorf("expiration %q: %v", d.Expiration, err)
			}
			return soakCred{keyID: d.AccessKeyId, secret: d.SecretAccessKey, token: d.SessionToken}, nil
		}
	}
	// A workflow reads both Actions secrets when its job starts; a daemon reads its profile.
	fromGitHub := func() (soakCred, error) {
		id, okID := gh.Secret("repos/acme/soak", "AWS_ACCESS_KEY_ID")
		sec, okSecret := gh.Secret("repos/acme/soak", "AWS_SECRET_ACCESS_KEY")
		if !okID || !okSecret {
			return soakCred{}, fmt.Errorf("the Actions secrets are not there yet")
		}
		return soakCred{keyID: id.Value, secret: sec.Value}, nil
	}
	fromFile := func() (soakCred, error) {
		raw, err := os.ReadFile(credsFile)
		if err != nil {
			return soakCred{}, err
		}
		var c soakCred
		for _, line := range strings.Split(string(raw), "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch strings.TrimSpace(k) {
			case "aws_access_key_id":
				c.keyID = strings.TrimSpace(v)
			case "aws_secret_access_key":
				c.secret = strings.TrimSpace(v)
			}
		}
		return c, nil
	}
	consumers := []*soakConsumer{
		{name: "github-actions", read: fromGitHub, useIt: true},
		{name: "credentials-file", read: fromFile, useIt: true},
		{name: "secretsmanager-1", read: fromSecret, useIt: true},
		{name: "secretsmanager-2", read: fromSecret, useIt: true},
		{name: "credentials-key", read: fromKeyward("key"), useIt: true},
		{name: "credentials-session", read: fromKeyward("session")},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range consumers {
		wg.Go(func() { s.consume(c, stop) })
	}
	wg.Go(func() { s.watchKeys(stop) })
	wg.Go(func() { s.crash(crashes, time.Duration(rotations)*4*time.Second, stop) })

	// Run until the identity has been rotated enough times and its last old key is gone.
	deadline := time.Now().Add(time.Duration(rotations)*15*time.Second + time.Minute)
	for !s.done(rotations) {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("%d rotations not done in time: %d keys seen\n%s", rotations, s.keysSeen(), s.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	s.scrapeSessions()
	s.stopServe()
	s.report(consumers, rotations)

	// At the end, AWSCURRENT is the vault's current key, and every target agrees.
	cur, err := fromSecret()
	if err != nil {
		t.Fatal(err)
	}
	if got := e.must(t, 0, "", "vault", "get", user); !strings.Contains(got.stdout, cur.keyID) || !strings.Contains(got.stdout, cur.secret) {
		t.Fatalf("AWSCURRENT (%s) is not the vault's current key", cur.keyID)
	}
	e.must(t, 0, "", "deliver", "--check")
	e.must(t, 0, "", "audit", "verify")
}

// soak is the state of one soak run: serve (restarted after each kill), the keys seen in IAM, and
// the time serve was down.
type soak struct {
	t    *testing.T
	w    *motoWorld
	e    *env
	user string

	mu        sync.Mutex
	serve     *serveProcess
	allLogs   strings.Builder
	down      [][2]time.Time       // when serve was killed, and when it listened again
	firstSeen map[string]time.Time // key id → when IAM first listed it
	created   map[string]time.Time // key id → IAM's CreateDate
	lastSeen  map[string]time.Time // key id → when IAM last listed it
	status    map[string]string    // key id → its status at the last listing
	sessions  int                  // STS GetSessionToken calls of the processes killed so far
	order     []string             // key ids in the order they appeared
}

func (s *soak) start() {
	p := startServe(s.t, s.e)
	s.mu.Lock()
	s.serve = p
	s.mu.Unlock()
}

func (s *soak) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allLogs.String() + s.serve.logs.String()
}

// crash SIGKILLs serve n times at random moments within span, restarting it each time at once.
func (s *soak) crash(n int, span time.Duration, stop <-chan struct{}) {
	for range n {
		select {
		case <-stop:
			return
		case <-time.After(time.Second + rand.N(span/time.Duration(n))):
		}
		s.scrapeSessions()
		s.mu.Lock()
		p := s.serve
		s.mu.Unlock()
		killed := time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		s.mu.Lock()
		s.allLogs.WriteString(p.logs.String() + "\n--- SIGKILL ---\n")
		s.mu.Unlock()
		s.start()
		s.mu.Lock()
		s.down = append(s.down, [2]time.Time{killed, time.Now()})
		s.mu.Unlock()
	}
}

var sessionCalls = regexp.MustCompile(`keyward_cloud_api_calls_total\{operation="SessionToken",outcome="ok"\} (\d+)`)

// scrapeSessions adds the running serve's STS session calls to the count (its counter dies with it).
func (s *soak) scrapeSessions() {
	s.mu.Lock()
	p := s.serve
	s.mu.Unlock()
	_, body := httpGet(s.t, "http://"+p.addr+"/metrics")
	if m := sessionCalls.FindStringSubmatch(body); m != nil {
		n, _ := strconv.Atoi(m[1])
		s.mu.Lock()
		s.sessions += n
		s.mu.Unlock()
	}
}

func (s *soak) stopServe() {
	s.mu.Lock()
	p := s.serve
	s.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
}

// watchKeys lists the user's keys in IAM every 100 ms, for the keys' lives.
func (s *soak) watchKeys(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		s.listKeys()
	}
}

func (s *soak) listKeys() map[string]string {
	out, err := s.w.iam.ListAccessKeys(context.Background(), &iam.ListAccessKeysInput{UserName: aws.String(s.user)})
	if err != nil {
		return nil
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstSeen == nil {
		s.firstSeen, s.created, s.lastSeen = map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	}
	s.status = map[string]string{}
	for _, k := range out.AccessKeyMetadata {
		id := aws.ToString(k.AccessKeyId)
		if _, ok := s.firstSeen[id]; !ok {
			s.firstSeen[id], s.created[id] = now, aws.ToTime(k.CreateDate)
			s.order = append(s.order, id)
		}
		s.lastSeen[id] = now
		s.status[id] = string(k.Status)
	}
	return s.status
}

func (s *soak) keysSeen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// done: the first key and rotations more have been seen, and only the last one is left.
func (s *soak) done(rotations int) bool {
	st := s.listKeys()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order) >= rotations+1 && len(st) == 1
}

// consume reads the consumer's source and signs with what it read until stop, checking each call's
// key against IAM first.
func (s *soak) consume(c *soakConsumer, stop <-chan struct{}) {
	c.firstUse = map[string]time.Time{}
	var held soakCred
	read := func() {
		got, err := c.read()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.reads++
		if err != nil {
			c.readErrors++ // serve down, or the secret not made yet: keep what it held, as an SDK does
			return
		}
		held = got
	}
	call := func() error {
		if !c.useIt {
			return nil
		}
		st, err := s.w.iam.ListAccessKeys(context.Background(), &iam.ListAccessKeysInput{UserName: aws.String(s.user)})
		if err == nil {
			alive := slices.ContainsFunc(st.AccessKeyMetadata, func(k iamtypes.AccessKeyMetadata) bool {
				return aws.ToString(k.AccessKeyId) == held.keyID && k.Status == iamtypes.StatusTypeActive
			})
			if !alive {
				c.mu.Lock()
				c.deadCall++
				c.mu.Unlock()
				c.note("%s: a call with %s, which IAM says is inactive or deleted", time.Now().Format("15:04:05.000"), held.keyID)
				return fmt.Errorf("key %s is not active", held.keyID)
			}
		}
		cfg := s.w.admin.Copy()
		cfg.Credentials = credentials.NewStaticCredentialsProvider(held.keyID, held.secret, held.token)
		cfg.RetryMaxAttempts = 1
		_, err = sts.NewFromConfig(cfg).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
		return err
	}
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(50+rand.IntN(50)) * time.Millisecond):
		}
		read()
		if held.keyID == "" {
			continue
		}
		err := call()
		c.mu.Lock()
		c.calls++
		c.mu.Unlock()
		if err != nil {
			c.mu.Lock()
			c.failed++
			c.mu.Unlock()
			read()
			if err := call(); err != nil {
				c.mu.Lock()
				c.failedAfterReread++
				c.mu.Unlock()
				c.note("%s: a call failed after a re-read: %v", time.Now().Format("15:04:05.000"), err)
				continue
			}
		}
		c.mu.Lock()
		if _, ok := c.firstUse[held.keyID]; !ok {
			c.firstUse[held.keyID] = time.Now()
		}
		c.mu.Unlock()
	}
}

// report checks what the consumers and IAM saw, and logs the figures BENCHMARKS.md reports.
func (s *soak) report(consumers []*soakConsumer, rotations int) {
	t := s.t
	promoted := s.promotions()
	var switchLags []time.Duration
	for _, id := range s.order[1:] {
		at, ok := promoted[id]
		if !ok {
			continue
		}
		var last time.Duration
		for _, c := range consumers {
			if first, ok := c.firstUse[id]; ok && c.useIt && first.Sub(at) > last {
				last = first.Sub(at)
			}
		}
		switchLags = append(switchLags, last)
	}
	slices.Sort(switchLags)
	reads, failures := 0, 0
	for _, c := range consumers {
		t.Logf("%-20s reads %5d (failed %3d while serve was down or the secret not yet made)  calls %5d  failed %d, after a re-read %d, with a dead key %d",
			c.name, c.reads, c.readErrors, c.calls, c.failed, c.failedAfterReread, c.deadCall)
		for _, p := range c.problems {
			t.Errorf("%s: %s", c.name, p)
		}
		failures += c.failedAfterReread + c.deadCall
		if c.name == "credentials-session" {
			reads = c.reads - c.readErrors
		}
		if c.useIt && c.calls == 0 {
			t.Errorf("%s never signed a request", c.name)
		}
	}
	if failures > 0 {
		t.Errorf("%d consumer failures over %d rotations (target 0)", failures, rotations)
	}
	// No key outlives its policy by more than a pass (and the time serve was down meanwhile, and a
	// rotation's own few seconds of verification and delivery).
	bound := soakRotateAfter + soakDeactivateAfter + soakDeleteAfter + soakInterval
	var longest time.Duration
	for _, id := range s.order {
		if _, alive := s.status[id]; alive {
			continue
		}
		life := s.lastSeen[id].Sub(s.created[id])
		allowed := bound + 2*time.Second + s.downWithin(s.created[id], s.lastSeen[id])
		if life > longest {
			longest = life
		}
		if life > allowed {
			t.Errorf("key %s lived %s, more than %s allows", id, life.Round(time.Millisecond), allowed.Round(time.Millisecond))
		}
	}
	perThousand := 0.0
	if reads > 0 {
		perThousand = float64(s.sessions) * 1000 / float64(reads)
	}
	median, worst := time.Duration(0), time.Duration(0)
	if len(switchLags) > 0 {
		median, worst = switchLags[len(switchLags)/2], switchLags[len(switchLags)-1]
	}
	t.Logf("soak: %d rotations (%d keys), %d crashes; consumer failures per rotation %.2f; promotion to the last consumer's switch: median %s, worst %s; "+
		"longest key life %s (policy %s + one pass %s); STS calls %d for %d session reads (%.1f per 1,000; one per restart of serve and per session lifetime)",
		len(s.order)-1, len(s.order), len(s.down), float64(failures)/float64(rotations), median.Round(time.Millisecond), worst.Round(time.Millisecond),
		longest.Round(time.Millisecond), soakRotateAfter+soakDeactivateAfter+soakDeleteAfter, soakInterval, s.sessions, reads, perThousand)
	// One per key seen (the run may see more keys than it waits for: rotations go on meanwhile), and
	// one more per restart of serve.
	if maxCalls := len(s.order) + len(s.down); s.sessions > maxCalls {
		t.Errorf("%d STS session calls, more than one per serve process and key (%d)", s.sessions, maxCalls)
	}
}

// downWithin is how long serve was down between from and to.
func (s *soak) downWithin(from, to time.Time) time.Duration {
	var d time.Duration
	for _, iv := range s.down {
		a, b := iv[0], iv[1]
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			d += b.Sub(a)
		}
	}
	return d
}

// promotions reads when each key became current from the audit trail (key.rotated).
func (s *soak) promotions() map[string]time.Time {
	out := map[string]time.Time{}
	r := s.e.must(s.t, 0, "", "audit", "export", "--output", "jsonl")
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rec struct {
			Action string
			Time   time.Time
			Detail map[string]string
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Action == "key.rotated" {
			out[rec.Detail["new_key_id"]] = rec.Time
		}
	}
	return out
}
