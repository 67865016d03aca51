// Package pgtest starts a private PostgreSQL server for the tests of one
// package: initdb into a temporary directory, a random loopback port, trust
// authentication, removed at the end. It never touches a system server, a
// container or the network. initdb refuses to run as root, so as root the
// server runs as the "postgres" user (Debian's package creates it).
//
// A test package calls Main from its TestMain; each test takes a database
// of its own with NewDB. The server starts at the first NewDB, so a package
// whose tests that run need none pays nothing. Where PostgreSQL is not
// installed, tests skip with a clear message, or fail when
// TELEHUB_REQUIRE_TOOLS is set (CI).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running private PostgreSQL.
type Server struct {
	// Port is the loopback TCP port it listens on.
	Port int
	dir  string // data directory and socket directory, under one temp dir
	bin  string // directory of initdb, pg_ctl, postgres
	as   string // user the server runs as, "" for the current one
	n    atomic.Int64
}

var (
	inMain   bool
	once     sync.Once
	current  *Server
	startErr error
)

// Main runs the package's tests and stops the server if one started. Use
// it as func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }.
func Main(m *testing.M) int {
	inMain = true
	code := m.Run()
	if current != nil {
		current.Stop()
	}
	return code
}

// Current returns the package's server, starting it at the first call, or
// skips t (fails it in CI) when there can be none.
func Current(t testing.TB) *Server {
	t.Helper()
	if !inMain {
		t.Fatal("pgtest: call pgtest.Main from the package's TestMain")
	}
	once.Do(func() { current, startErr = Start() })
	if current == nil {
		why := startErr.Error()
		if os.Getenv("TELEHUB_REQUIRE_TOOLS") != "" {
			t.Fatalf("PostgreSQL required: %s", why)
		}
		t.Skipf("PostgreSQL not available (install Debian's postgresql package): %s", why)
	}
	return current
}

// NewDB creates an empty database for t and returns its URL; it is
// dropped at the end of the test.
func NewDB(t testing.TB) string {
	t.Helper()
	s := Current(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	if err := s.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	return s.URL(name)
}

// URL is the address of database db on the server.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Exec runs one statement as the superuser in the postgres database.
func (s *Server) Exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

// Start initialises and starts a server.
func Start() (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return nil, errors.New(`running as root and there is no "postgres" user to run initdb as`)
		}
		s.as = "postgres"
	}
	if s.dir, err = os.MkdirTemp("", "telehub-pg-"); err != nil {
		return nil, err
	}
	if s.as != "" {
		if out, err := exec.Command("chown", s.as, s.dir).CombinedOutput(); err != nil {
			os.RemoveAll(s.dir)
			return nil, fmt.Errorf("chown %s: %v: %s", s.dir, err, out)
		}
	}
	data := filepath.Join(s.dir, "data")
	if out, err := s.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	// Durability of the test server itself is not under test: fsync off
	// keeps a test package's hundreds of commits fast on a shared disk.
	// Commits still go through the WAL as in production.
	for attempt := 0; ; attempt++ {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB", s.Port, s.dir)
		out, err := s.run("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(s.dir, "log"), "-o", opts)
		if err == nil {
			return s, nil
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
			os.RemoveAll(s.dir)
			return nil, fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
		}
	}
}

// Stop stops the server at once and removes its files.
func (s *Server) Stop() {
	s.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", filepath.Join(s.dir, "data"))
	os.RemoveAll(s.dir)
}

// Restart stops the server (mode "fast" or "immediate") and starts it
// again on the same port, for tests of a database that goes away.
func (s *Server) Restart(mode string, down time.Duration) error {
	data := filepath.Join(s.dir, "data")
	if out, err := s.run("pg_ctl", "stop", "-m", mode, "-w", "-D", data); err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	time.Sleep(down)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", s.Port, s.dir)
	if out, err := s.run("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(s.dir, "log"), "-o", opts); err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	return nil
}

func (s *Server) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, name)
	var cmd *exec.Cmd
	if s.as != "" {
		cmd = exec.Command("runuser", append([]string{"-u", s.as, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = s.dir
	return cmd.CombinedOutput()
}

// findBin finds the directory of PostgreSQL's server programs: on PATH, or
// where Debian installs them (/usr/lib/postgresql/N/bin, newest first).
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("initdb not found on PATH or in /usr/lib/postgresql/*/bin")
}

func version(dir string) int {
	v, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(dir, "/usr/lib/postgresql/"), "/")[0])
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
