// Package testenv gives tests the real services they run against: a PostgreSQL server and
// moto_server, found through KEYWARD_TEST_POSTGRES_DSN and KEYWARD_TEST_MOTO_URL (scripts/testenv.sh
// starts both). Without them a test skips with a message saying how to run it, unless
// KEYWARD_TEST_REQUIRE_SERVICES=1 (as in .ci/run), where a missing service fails the test.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/jackc/pgx/v5"
)

func need(t testing.TB, variable, what string) string {
	t.Helper()
	v := os.Getenv(variable)
	if v != "" {
		return v
	}
	msg := what + " not available: set " + variable + " (eval \"$(scripts/testenv.sh start)\" starts one)"
	if os.Getenv("KEYWARD_TEST_REQUIRE_SERVICES") == "1" {
		t.Fatal(msg + "; KEYWARD_TEST_REQUIRE_SERVICES=1 forbids skipping")
	}
	t.Skip(msg)
	return ""
}

// MotoURL returns the address of the test moto_server.
func MotoURL(t testing.TB) string {
	t.Helper()
	return need(t, "KEYWARD_TEST_MOTO_URL", "moto_server")
}

// PostgresDSN returns a DSN for a new, empty schema of its own on the test PostgreSQL server,
// dropped when the test ends.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	admin := need(t, "KEYWARD_TEST_POSTGRES_DSN", "PostgreSQL")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("KEYWARD_TEST_POSTGRES_DSN must be a URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Database is one driver and a DSN for an empty database of it.
type Database struct {
	Driver string
	DSN    string
}

// ForEachDatabase runs fn once on a fresh SQLite file and once on a fresh PostgreSQL schema: the
// contract every store test holds to on both drivers.
func ForEachDatabase(t *testing.T, fn func(t *testing.T, db Database)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "keyward.db")})
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, Database{Driver: "postgres", DSN: PostgresDSN(t)})
	})
}

// Exec runs one SQL statement on the PostgreSQL database a DSN names.
func Exec(t testing.TB, ctx context.Context, dsn, statement string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, statement); err != nil {
		t.Fatalf("%s: %v", statement, err)
	}
}

// MotoAWSConfig is an AWS SDK configuration that sends every call to the test moto_server.
func MotoAWSConfig(t testing.TB, region string) aws.Config {
	t.Helper()
	return aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
		BaseEndpoint: aws.String(MotoURL(t)),
	}
}

// CreateKMSKey makes a symmetric key in moto and returns its id.
func CreateKMSKey(t testing.TB, cfg aws.Config) string {
	t.Helper()
	out, err := kms.NewFromConfig(cfg).CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("keyward test")})
	if err != nil {
		t.Fatalf("create KMS key in moto: %v", err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

// PostgresTLSDSN returns a DSN that reaches the test PostgreSQL over TLS with sslmode=verify-full,
// trusting the CA in caFile ("" for the test server's own CA).
func PostgresTLSDSN(t testing.TB, caFile string) string {
	t.Helper()
	admin := need(t, "KEYWARD_TEST_POSTGRES_DSN", "PostgreSQL")
	if caFile == "" {
		caFile = need(t, "KEYWARD_TEST_POSTGRES_CA", "the test PostgreSQL's TLS CA")
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = "localhost:" + u.Port()
	q := u.Query()
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", caFile)
	u.RawQuery = q.Encode()
	return u.String()
}

// StartMoto starts a moto_server of the test's own, on a free loopback port, stopped when the test
// ends. After noAuthActions unauthenticated calls (set-up), it enforces request signing: a request
// signed with a wrong, or deleted, key is refused with HTTP 403. A test's own server also means state
// of its own.
func StartMoto(t testing.TB, noAuthActions int) string {
	t.Helper()
	need(t, "KEYWARD_TEST_MOTO_URL", "moto_server") // the same prerequisite: moto is installed
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatalf("moto_server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "INITIAL_NO_AUTH_ACTION_COUNT="+strconv.Itoa(noAuthActions))
	cmd.Dir = t.TempDir()
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	// moto_server is often a shim (pyenv) that runs Python as a child: give it a process group of its
	// own and stop the whole group, or the server outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MotoWithAdmin starts a moto_server of the test's own and, unauthenticated, creates an admin user
// (allow-all inline policy) and its key, then runs setup, which must make exactly setupCalls calls.
// From then on moto refuses any request not signed by a key it knows. It returns the admin's
// configuration.
func MotoWithAdmin(t testing.TB, setupCalls int, setup func(anon aws.Config)) aws.Config {
	t.Helper()
	ctx := context.Background()
	url := StartMoto(t, 3+setupCalls)
	anon := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "")}
	admin := iam.NewFromConfig(anon)
	// Keyward's own user: exempt, as an operator would mark it, so passes leave its key alone.
	if _, err := admin.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("keyward-admin"),
		Tags: []iamtypes.Tag{{Key: aws.String("keyward:exempt"), Value: aws.String("true")}}}); err != nil {
		t.Fatalf("moto set-up: %v", err)
	}
	if _, err := admin.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("keyward-admin"), PolicyName: aws.String("all"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)}); err != nil {
		t.Fatalf("moto set-up: %v", err)
	}
	key, err := admin.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("keyward-admin")})
	if err != nil {
		t.Fatalf("moto set-up: %v", err)
	}
	if setup != nil {
		setup(anon)
	}
	cfg := anon.Copy()
	cfg.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(key.AccessKey.AccessKeyId), aws.ToString(key.AccessKey.SecretAccessKey), "")
	return cfg
}

// Clock is a settable clock for tests that move time.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// HoldTableLock locks table (ACCESS EXCLUSIVE) in a transaction of its own on the database dsn
// names, as a long migration or a stuck session would: every statement that touches the table waits.
// It returns what releases the lock; released at cleanup at the latest.
func HoldTableLock(t testing.TB, dsn, table string) (release func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	if _, err := conn.Exec(ctx, `BEGIN`); err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := conn.Exec(ctx, `LOCK TABLE `+pgx.Identifier{table}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatalf("lock %s: %v", table, err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = conn.Close(context.Background()) }) } // the lock goes with the session
	t.Cleanup(release)
	return release
}

// HoldAdvisoryLock takes a PostgreSQL advisory lock in a session of its own (the test database's),
// as another replica would, and returns what releases it. Released at cleanup at the latest.
func HoldAdvisoryLock(t testing.TB, key int64) (release func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, need(t, "KEYWARD_TEST_POSTGRES_DSN", "PostgreSQL"))
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatalf("take advisory lock: %v", err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = conn.Close(context.Background()) }) } // the lock goes with the session
	t.Cleanup(release)
	return release
}
