package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Bounds of the harness. None of them is a sleep: each bounds a wait for a
// condition that is polled with a short backoff.
const (
	// startTimeout bounds how long a started server may take to answer PING.
	startTimeout = 10 * time.Second
	// stopTimeout bounds how long a server may take to exit after SIGTERM
	// before it gets SIGKILL.
	stopTimeout = 10 * time.Second
	// killTimeout bounds how long a server may take to be reaped after
	// SIGKILL, and its port to close.
	killTimeout = 10 * time.Second
	// startAttempts is how many free ports Start tries when the one it
	// picked turns out to be taken by the time redis-server binds it.
	startAttempts = 5
	// adminTimeout bounds one command of Do and KillClients.
	adminTimeout = 10 * time.Second
	// logTailLines is how many lines of the server log a failure shows.
	logTailLines = 30
)

// Server is one redis-server process started by Start (or StartCluster) on
// 127.0.0.1. It is stopped and reaped in the cleanup of the test that
// started it. Its methods are safe for concurrent use, but those that fail
// the test (Kill, Restart, Stop) must be called from the test goroutine.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	busPort int // cluster bus port; 0 when not in cluster mode
	cluster bool
	args    []string // extra options given to Start

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of redis-server. done is closed once it is reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // result of Wait; read only after done is closed
}

// errPortTaken marks a start that failed because the port was in use.
var errPortTaken = errors.New("port already in use")

// Start starts a redis-server on a free 127.0.0.1 port and waits until it
// answers PING. args are extra server options in redis-server command-line
// form, as "--name", "value" pairs, for example
//
//	redistest.Start(t, "--client-output-buffer-limit", "pubsub 1mb 512kb 1")
//
// The server runs in a directory from t.TempDir with persistence off
// (--save "", --appendonly no) and logs to <Dir>/redis.log. If the chosen
// port is taken by the time the server binds it, Start tries another one.
// Start fails the test with the error of Binary when redis-server is
// missing, and with the tail of the server log when it does not come up.
// The server is stopped (SIGTERM, then SIGKILL) and reaped in t.Cleanup.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, false, args)
}

func start(t testing.TB, cluster bool, args []string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	// TempDir first: cleanups run last-in first-out, so the server is
	// stopped before its directory is removed.
	s := &Server{
		t:       t,
		bin:     bin,
		dir:     t.TempDir(),
		cluster: cluster,
		args:    append([]string(nil), args...),
	}
	for attempt := 1; ; attempt++ {
		n := 1
		if cluster {
			n = 2 // client port and cluster bus port
		}
		ports, err := freePorts(n)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.port = ports[0]
		if cluster {
			s.busPort = ports[1]
		}
		err = s.launch()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == startAttempts {
			t.Fatalf("redistest: start redis-server: %v", err)
		}
		t.Logf("redistest: %v; retrying on another port", err)
	}
	t.Cleanup(s.cleanup)
	return s
}

// Addr returns the server's address, "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port. It stays the same across Restart.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory, which holds its log
// (redis.log) and, in a cluster, its nodes.conf.
func (s *Server) Dir() string { return s.dir }

// LogPath returns the path of the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.dir, "redis.log") }

// Running reports whether the server process is running: it was started
// and neither Kill nor Stop was called since, and it has not exited.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the server and waits until the process is reaped
// and its port is closed. Clients see their connections reset. Kill on a
// server that is not running does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.terminate(false); err != nil {
		s.t.Fatalf("redistest: kill %s: %v", s.Addr(), err)
	}
}

// Stop stops the server gracefully (SIGTERM; SIGKILL if it has not exited
// after 10s) and waits until the process is reaped and its port closed.
// Stop on a server that is not running does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.terminate(true); err != nil {
		s.t.Fatalf("redistest: stop %s: %v", s.Addr(), err)
	}
}

// Restart starts the server again, after Kill or Stop, on the same port,
// in the same directory and with the same options, and waits until it
// answers PING. The data set is empty again (there is no persistence); a
// cluster node keeps its identity and slots from its nodes.conf. Restart
// fails the test if the server is running or does not come up within 10s.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		select {
		case <-s.proc.done:
			s.proc = nil // it exited by itself; it is reaped already
		default:
			s.t.Fatalf("redistest: restart %s: server is running; call Kill or Stop first", s.Addr())
		}
	}
	// The port may still be held for a moment (for example by a client that
	// happened to get it as its ephemeral port); keep trying it, bounded.
	deadline := time.Now().Add(startTimeout)
	backoff := 10 * time.Millisecond
	for {
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			s.t.Fatalf("redistest: restart %s: %v", s.Addr(), err)
		}
		time.Sleep(backoff) // backoff between bounded retries, not synchronisation
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// NewClient returns a go-redis client connected to the server with default
// options, closed in t.Cleanup.
func (s *Server) NewClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Do runs one command on a short-lived admin connection (RESP2, no client
// name, no retries) and returns its reply: int64, string, []any, or nil for
// a nil reply. It fails the test on any other error. For example
//
//	srv.Do(t, "PUBSUB", "NUMSUB", "ch") // []any{"ch", int64(1)}
func (s *Server) Do(t testing.TB, args ...any) any {
	t.Helper()
	v, err := adminDo(s.Addr(), args...)
	if err != nil {
		t.Fatalf("redistest: %s %v: %v", s.Addr(), args, err)
	}
	return v
}

// KillClients runs CLIENT KILL with the given filter, for example
//
//	srv.KillClients(t, "TYPE", "pubsub")
//
// and returns the number of clients killed. The admin connection that runs
// it is not killed (SKIPME yes is Redis's default).
func (s *Server) KillClients(t testing.TB, filter ...string) int64 {
	t.Helper()
	args := make([]any, 0, 2+len(filter))
	args = append(args, "CLIENT", "KILL")
	for _, f := range filter {
		args = append(args, f)
	}
	v := s.Do(t, args...)
	n, ok := v.(int64)
	if !ok {
		t.Fatalf("redistest: CLIENT KILL %v: unexpected reply %#v", filter, v)
	}
	return n
}

// adminDo runs one command on a fresh connection to addr.
func adminDo(addr string, args ...any) (any, error) {
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		Protocol:                 2,
		DisableIdentity:          true,
		MaxRetries:               -1,
		PoolSize:                 1,
		DialTimeout:              adminTimeout,
		ReadTimeout:              adminTimeout,
		WriteTimeout:             adminTimeout,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return v, err
}

// cleanup stops the server at the end of the test.
func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reap(true); err != nil {
		s.t.Errorf("redistest: cleanup %s: %v", s.Addr(), err)
	}
}

// commandArgs returns the redis-server command line of this server.
func (s *Server) commandArgs() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", s.LogPath(),
		"--daemonize", "no",
	}
	if s.cluster {
		a = append(a,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(s.busPort),
		)
	}
	return append(a, s.args...)
}

// launch starts redis-server and waits until it answers. The caller holds
// s.mu (or owns s exclusively). On error no process is left running. The
// error wraps errPortTaken when a port was in use.
func (s *Server) launch() error {
	logOffset := fileSize(s.LogPath())
	outPath := filepath.Join(s.dir, "stdout.log")
	outOffset := fileSize(outPath)
	// Errors in the options are printed before the log file is opened: the
	// process writes its stdout and stderr straight into a file (no copying
	// goroutine is involved).
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = out.Close() }()

	cmd := exec.Command(s.bin, s.commandArgs()...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p

	if err := s.waitReady(p); err != nil {
		_ = s.reap(false)
		tail := tailLines(readFrom(s.LogPath(), logOffset)+readFrom(outPath, outOffset), logTailLines)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return fmt.Errorf("%w\n--- tail of %s and stdout.log ---\n%s", err, s.LogPath(), tail)
	}
	return nil
}

// waitReady polls the server until it answers INFO with its own process
// id, which is PING plus the proof that the port is held by this process
// and not by another server that got it first.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	backoff := 2 * time.Millisecond
	var lastErr error
	for {
		pid, err := serverPID(s.Addr())
		switch {
		case err == nil && pid == p.cmd.Process.Pid:
			return nil
		case err == nil:
			// Another server holds the port. Ours is about to fail to bind.
			return fmt.Errorf("%w: %s is served by pid %d", errPortTaken, s.Addr(), pid)
		}
		lastErr = err
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited before answering: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from %s within %v: %v", s.Addr(), startTimeout, lastErr)
		}
		t := time.NewTimer(backoff)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// terminate stops the process with reap and then waits until its port is
// closed. The caller holds s.mu.
func (s *Server) terminate(graceful bool) error {
	if s.proc == nil {
		return nil
	}
	if err := s.reap(graceful); err != nil {
		return err
	}
	return s.waitPortClosed()
}

// reap stops the process, if any, and waits until it is reaped: with
// SIGKILL, or when graceful with SIGTERM and SIGKILL after stopTimeout. The
// caller holds s.mu.
func (s *Server) reap(graceful bool) error {
	p := s.proc
	if p == nil {
		return nil
	}
	var forced error
	if graceful {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopTimeout)
		select {
		case <-p.done:
		case <-t.C:
			forced = fmt.Errorf("pid %d did not exit within %v of SIGTERM; sent SIGKILL", p.cmd.Process.Pid, stopTimeout)
		}
		t.Stop()
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill() // fails only if the process is gone already
		t := time.NewTimer(killTimeout)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			return fmt.Errorf("pid %d not reaped within %v of SIGKILL", p.cmd.Process.Pid, killTimeout)
		}
	}
	s.proc = nil
	return forced
}

// waitPortClosed polls until nothing accepts connections on the port. The
// kernel closes the listening socket when the process exits, so this
// normally succeeds at once.
func (s *Server) waitPortClosed() error {
	deadline := time.Now().Add(killTimeout)
	backoff := 2 * time.Millisecond
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err != nil {
			return nil
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still accepts connections %v after the server exited", s.Addr(), killTimeout)
		}
		time.Sleep(backoff) // backoff of a bounded poll
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// serverPID asks the server at addr for its process id with INFO server,
// speaking RESP directly so that polling needs no client library.
func serverPID(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("INFO server: %s", line) // e.g. -LOADING
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("INFO server: bad reply %q", line)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server: no process_id")
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago. All listeners are held until every port is chosen so that
// the ports differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on, or "" on error.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
