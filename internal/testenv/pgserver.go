package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

// PGServer is a PostgreSQL server of a test's own, on loopback, that the test may stop, start again
// and give a streaming standby to promote: what the shared test server cannot be put through.
type PGServer struct {
	t    testing.TB
	bin  string // the server's binaries
	dir  string // this server's directory: data/ and server.log
	Port int
}

// NewPGServer initialises and starts a server of the test's own (needs the PostgreSQL binaries, which
// the shared test server's presence, KEYWARD_TEST_POSTGRES_DSN, vouches for). Stopped and removed at
// cleanup.
func NewPGServer(t testing.TB) *PGServer {
	t.Helper()
	need(t, "KEYWARD_TEST_POSTGRES_DSN", "PostgreSQL")
	s := newPGDir(t)
	s.run("initdb", "-D", s.data(), "-U", "keyward", "--auth=trust", "-E", "UTF8")
	s.configure("")
	s.Start()
	return s
}

func newPGDir(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinaries()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "keyward-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &PGServer{t: t, bin: bin, dir: dir, Port: FreePort(t)}
	if os.Getuid() == 0 { // initdb refuses root: the server runs as postgres
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = s.pgctl("-m", "immediate", "stop")
		_ = os.RemoveAll(dir)
	})
	return s
}

func (s *PGServer) data() string { return filepath.Join(s.dir, "data") }

// configure appends settings to the server's configuration: its port and socket directory, and extra.
func (s *PGServer) configure(extra string) {
	s.t.Helper()
	conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_connections = 100\nfsync = on\n%s\n",
		s.Port, s.dir, extra)
	f, err := os.OpenFile(filepath.Join(s.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(conf); err != nil {
		s.t.Fatal(err)
	}
}

// DSN is the server's postgres database as a URL, with any extra query parameters.
func (s *PGServer) DSN(params string) string {
	dsn := fmt.Sprintf("postgres://keyward@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	if params != "" {
		dsn += "&" + params
	}
	return dsn
}

// Start starts the server and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	if err := s.pgctl("-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		s.t.Fatalf("start PostgreSQL: %v\n%s", err, log)
	}
}

// Stop shuts the server down the way an operator's restart does (fast: sessions are cut, the server
// checkpoints and exits), and waits for it.
func (s *PGServer) Stop() {
	s.t.Helper()
	if err := s.pgctl("-m", "fast", "-w", "stop"); err != nil {
		s.t.Fatalf("stop PostgreSQL: %v", err)
	}
}

// Standby makes a streaming replica of s (pg_basebackup) on a port of its own, and starts it.
func (s *PGServer) Standby() *PGServer {
	s.t.Helper()
	r := newPGDir(s.t)
	r.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "keyward", "-D", r.data(), "-R", "-X", "stream")
	r.configure("")
	r.Start()
	return r
}

// Promote makes a standby the primary, and waits until it is.
func (s *PGServer) Promote() {
	s.t.Helper()
	if err := s.pgctl("-w", "promote"); err != nil {
		s.t.Fatalf("promote PostgreSQL: %v", err)
	}
}

func (s *PGServer) pgctl(args ...string) error {
	out, err := s.command("pg_ctl", append([]string{"-D", s.data()}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %w: %s", args, err, out)
	}
	return nil
}

func (s *PGServer) run(name string, args ...string) {
	s.t.Helper()
	if out, err := s.command(name, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (s *PGServer) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if os.Getuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// pgBinaries finds the directory of initdb and pg_ctl, as scripts/testenv.sh does.
func pgBinaries() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := string(out[:len(out)-1])
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", fmt.Errorf("PostgreSQL server binaries (initdb) not found")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// FreePort returns a TCP port free on loopback now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
