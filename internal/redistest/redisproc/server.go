package redisproc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
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
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Bounds of the package. None of them is a sleep: each bounds a wait for a
// condition that is polled with a short backoff.
const (
	// startTimeout bounds how long a started server may take to answer.
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
	// AdminTimeout bounds one command of Server.Do.
	AdminTimeout = 10 * time.Second
	// logTailLines is how many lines of the server log an error shows.
	logTailLines = 30
)

// Options configure Start. The zero value starts a plain server.
type Options struct {
	// Binary is the redis-server to run; "" means the result of Binary.
	Binary string
	// Dir is the server's working directory, which must exist; it holds
	// redis.log. "" means a new temporary directory that Close removes.
	Dir string
	// Args are extra server options in redis-server command-line form, as
	// "--name", "value" pairs. They come after the harness's own options,
	// so they override them.
	Args []string
	// Cluster starts the server in cluster mode: --cluster-enabled yes,
	// --cluster-config-file <Dir>/nodes.conf and --cluster-port on a second
	// free port (BusPort).
	Cluster bool
	// TLS, if set, makes the server accept TLS connections only: its port
	// is --tls-port (and --port is 0).
	TLS *TLSOptions
	// Logf, if set, receives notes, such as a start retried on another
	// port. It may be called until Start returns.
	Logf func(format string, args ...any)

	// sentinelConf, when set, runs the server as a Sentinel with this
	// configuration file (StartSentinel).
	sentinelConf string
}

// TLSOptions configure a server's TLS.
type TLSOptions struct {
	// Certs are the authority, whose certificate is the server's
	// tls-ca-cert-file, and the server's certificate. nil means new ones
	// from NewCerts, in <Dir>/tls.
	Certs *Certs
	// AuthClients requires clients to present a certificate signed by the
	// authority (tls-auth-clients yes); false is tls-auth-clients no.
	AuthClients bool
}

// Server is one redis-server process on 127.0.0.1 started by Start. Its
// methods are safe for concurrent use. Close stops it for good.
type Server struct {
	bin     string
	dir     string
	ownDir  bool // dir was made by Start; Close removes it
	port    int
	busPort int // cluster bus port; 0 when not in cluster mode
	cluster bool
	args    []string
	conf    string // Sentinel configuration file; "" for a data server
	tls     *TLSOptions

	mu     sync.Mutex
	proc   *process // nil while stopped
	closed bool
}

// process is one run of redis-server. done is closed once it is reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // result of Wait; read only after done is closed
}

// errPortTaken marks a start that failed because the port was in use.
var errPortTaken = errors.New("port already in use")

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("redisproc: server closed")

// Start starts a redis-server on a free 127.0.0.1 port and waits until it
// answers. The server runs with persistence off (--save "", --appendonly
// no) and logs to <Dir>/redis.log. If the chosen port is taken by the time
// the server binds it, Start tries another one (5 attempts in all). The
// error wraps ErrNoBinary when redis-server is missing, and shows the tail
// of the server's log when it does not come up within 10s. Call Close when
// done with the server.
func Start(opts Options) (*Server, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(); err != nil {
			return nil, err
		}
	}
	s := &Server{
		bin:     bin,
		dir:     opts.Dir,
		cluster: opts.Cluster,
		args:    append([]string(nil), opts.Args...),
		conf:    opts.sentinelConf,
	}
	var err error
	if s.dir, s.ownDir, err = workDir(s.dir, "redisproc-"); err != nil {
		return nil, err
	}
	if opts.TLS != nil {
		t := *opts.TLS
		if t.Certs == nil {
			dir := filepath.Join(s.dir, "tls")
			err := os.Mkdir(dir, 0o700)
			if err == nil {
				t.Certs, err = NewCerts(dir)
			}
			if err != nil {
				s.removeDir()
				return nil, fmt.Errorf("redisproc: %w", err)
			}
		}
		s.tls = &t
	}
	for attempt := 1; ; attempt++ {
		n := 1
		if s.cluster {
			n = 2 // client port and cluster bus port
		}
		ports, err := freePorts(n)
		if err != nil {
			s.removeDir()
			return nil, fmt.Errorf("redisproc: %w", err)
		}
		s.port = ports[0]
		if s.cluster {
			s.busPort = ports[1]
		}
		err = s.launch()
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == startAttempts {
			s.removeDir()
			return nil, fmt.Errorf("redisproc: start redis-server: %w", err)
		}
		if opts.Logf != nil {
			opts.Logf("redisproc: %v; retrying on another port", err)
		}
	}
}

// Addr returns the server's address, "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port. It stays the same across Restart.
func (s *Server) Port() int { return s.port }

// BusPort returns the cluster bus port of a server started with
// Options.Cluster, and 0 otherwise.
func (s *Server) BusPort() int { return s.busPort }

// Certs returns the certificates of a server started with Options.TLS,
// and nil otherwise.
func (s *Server) Certs() *Certs {
	if s.tls == nil {
		return nil
	}
	return s.tls.Certs
}

// TLSConfig returns a new client configuration for a server started with
// Options.TLS, Certs().ClientTLS(): it trusts the authority and presents
// the client certificate. It returns nil for a server without TLS.
func (s *Server) TLSConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Certs.ClientTLS()
}

// Binary returns the path of the redis-server the server runs.
func (s *Server) Binary() string { return s.bin }

// Dir returns the server's working directory, which holds its log
// (redis.log) and, in a cluster, its nodes.conf.
func (s *Server) Dir() string { return s.dir }

// LogPath returns the path of the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.dir, "redis.log") }

// Running reports whether the server process is running: it was started
// and neither Kill, Stop nor Close was called since, and it has not exited.
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
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.terminate(false); err != nil {
		return fmt.Errorf("redisproc: kill %s: %w", s.Addr(), err)
	}
	return nil
}

// Stop stops the server gracefully (SIGTERM; SIGKILL if it has not exited
// after 10s) and waits until the process is reaped and its port closed.
// Stop on a server that is not running does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.terminate(true); err != nil {
		return fmt.Errorf("redisproc: stop %s: %w", s.Addr(), err)
	}
	return nil
}

// Restart starts the server again, after Kill or Stop, on the same port,
// in the same directory and with the same options, and waits until it
// answers. The data set is empty again (there is no persistence); a
// cluster node keeps its identity and slots from its nodes.conf. Restart
// fails if the server is running, was closed, or does not come up within
// 10s.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.proc != nil {
		select {
		case <-s.proc.done:
			s.proc = nil // it exited by itself; it is reaped already
		default:
			return fmt.Errorf("redisproc: restart %s: server is running; call Kill or Stop first", s.Addr())
		}
	}
	// The port may still be held for a moment (for example by a client that
	// happened to get it as its ephemeral port); keep trying it, bounded.
	deadline := time.Now().Add(startTimeout)
	backoff := 10 * time.Millisecond
	for {
		err := s.launch()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			return fmt.Errorf("redisproc: restart %s: %w", s.Addr(), err)
		}
		time.Sleep(backoff) // backoff between bounded retries, not synchronisation
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// Close stops the server like Stop and, if Start made its directory,
// removes it. After Close, Restart fails; Close again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.reap(true)
	s.removeDir()
	if err != nil {
		return fmt.Errorf("redisproc: close %s: %w", s.Addr(), err)
	}
	return nil
}

// workDir returns dir, or when dir is "" a new temporary directory and
// true: the caller removes it.
func workDir(dir, pattern string) (string, bool, error) {
	if dir != "" {
		return dir, false, nil
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", false, fmt.Errorf("redisproc: %w", err)
	}
	return dir, true, nil
}

// startIn starts a server as Start does in the new directory parent/sub.
func startIn(parent, sub string, opts Options) (*Server, error) {
	opts.Dir = filepath.Join(parent, sub)
	if err := os.Mkdir(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	return Start(opts)
}

func (s *Server) removeDir() {
	if s.ownDir {
		_ = os.RemoveAll(s.dir)
	}
}

// Do runs one command on a short-lived admin connection (RESP2, no client
// name, no retries, each step bounded by AdminTimeout; over TLS with
// TLSConfig if the server has TLS) as the default user, and returns its
// reply: int64, string, []any, or nil for a nil reply. For example
//
//	srv.Do(ctx, "PUBSUB", "NUMSUB", "ch") // []any{"ch", int64(1)}
func (s *Server) Do(ctx context.Context, args ...any) (any, error) {
	c := redis.NewClient(&redis.Options{
		Addr:                     s.Addr(),
		TLSConfig:                s.TLSConfig(),
		Protocol:                 2,
		DisableIdentity:          true,
		MaxRetries:               -1,
		PoolSize:                 1,
		DialTimeout:              AdminTimeout,
		ReadTimeout:              AdminTimeout,
		WriteTimeout:             AdminTimeout,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(ctx, AdminTimeout)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return v, err
}

// commandArgs returns the redis-server command line of this server.
func (s *Server) commandArgs() []string {
	port := []string{"--port", strconv.Itoa(s.port)}
	if t := s.tls; t != nil {
		auth := "no"
		if t.AuthClients {
			auth = "yes"
		}
		port = []string{
			"--port", "0",
			"--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", t.Certs.ServerCertFile,
			"--tls-key-file", t.Certs.ServerKeyFile,
			"--tls-ca-cert-file", t.Certs.CAFile,
			"--tls-auth-clients", auth,
		}
	}
	if s.conf != "" {
		a := []string{
			s.conf, "--sentinel",
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--dir", s.dir,
			"--logfile", s.LogPath(),
			"--daemonize", "no",
		}
		return append(a, s.args...)
	}
	a := append(port,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", s.LogPath(),
		"--daemonize", "no",
	)
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
		pid, err := serverPID(s.Addr(), s.TLSConfig())
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
// over TLS when tlsConf is not nil, speaking RESP directly so that polling
// needs no client library.
func serverPID(addr string, tlsConf *tls.Config) (int, error) {
	d := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsConf)
	} else {
		c, err = d.Dial("tcp", addr)
	}
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
	if v, ok := ParseInfo(string(body))["process_id"]; ok {
		return strconv.Atoi(v)
	}
	return 0, errors.New("INFO server: no process_id")
}

// ParseInfo parses the "key:value" lines of an INFO or CLUSTER INFO reply;
// section headers and blank lines are skipped.
func ParseInfo(s string) map[string]string {
	m := make(map[string]string)
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = v
		}
	}
	return m
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
