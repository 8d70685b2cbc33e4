package redistest

import (
	"context"
	"io"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

// Server is one redis-server process started by Start (or StartCluster) on
// 127.0.0.1. It is stopped and reaped in the cleanup of the test that
// started it. It embeds the *redisproc.Server that runs it (Addr, Port,
// BusPort, Dir, LogPath, Running come from there); its own Kill, Stop and
// Restart fail the test instead of returning an error, and must be called
// from the test goroutine. Its methods are safe for concurrent use.
type Server struct {
	*redisproc.Server
	t testing.TB
}

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
	return StartOptions(t, redisproc.Options{Args: args})
}

// StartOptions is Start with every option of redisproc.Start. An empty
// opts.Dir becomes a directory from t.TempDir, and opts.Logf, if nil,
// t.Logf.
func StartOptions(t testing.TB, opts redisproc.Options) *Server {
	t.Helper()
	ps := started(t, &opts.Dir, &opts.Logf, func() (*redisproc.Server, error) { return redisproc.Start(opts) })
	return &Server{Server: ps, t: t}
}

// Kill sends SIGKILL to the server and waits until the process is reaped
// and its port is closed. Clients see their connections reset. Kill on a
// server that is not running does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	if err := s.Server.Kill(); err != nil {
		s.t.Fatal(err)
	}
}

// Stop stops the server gracefully (SIGTERM; SIGKILL if it has not exited
// after 10s) and waits until the process is reaped and its port closed.
// Stop on a server that is not running does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.Server.Stop(); err != nil {
		s.t.Fatal(err)
	}
}

// Restart starts the server again, after Kill or Stop, on the same port,
// in the same directory and with the same options, and waits until it
// answers PING. The data set is empty again (there is no persistence); a
// cluster node keeps its identity and slots from its nodes.conf. Restart
// fails the test if the server is running or does not come up within 10s.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Server.Restart(); err != nil {
		s.t.Fatal(err)
	}
}

// NewClient returns a go-redis client connected to the server with default
// options, closed in t.Cleanup. For a server with TLS, its TLSConfig is
// Server.TLSConfig (the authority trusted, the client certificate
// presented).
func (s *Server) NewClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.TLSConfig()})
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
	v, err := s.Server.Do(context.Background(), args...)
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

// CreateUser creates or replaces the ACL user name with password and
// rules (ACL SETUSER name reset on >password rules...); see
// redisproc.Server.CreateUser.
func (s *Server) CreateUser(t testing.TB, name, password string, rules ...string) {
	t.Helper()
	if err := s.Server.CreateUser(context.Background(), name, password, rules...); err != nil {
		t.Fatal(err)
	}
}

// SetUser applies ACL rules to the user name (ACL SETUSER name rules...).
// Rules that take a channel away make Redis disconnect the user's clients
// subscribed to it.
func (s *Server) SetUser(t testing.TB, name string, rules ...string) {
	t.Helper()
	if err := s.Server.SetUser(context.Background(), name, rules...); err != nil {
		t.Fatal(err)
	}
}

// RevokeChannels takes every channel away from the user name (ACL SETUSER
// name resetchannels): Redis disconnects the user's subscribed clients.
func (s *Server) RevokeChannels(t testing.TB, name string) {
	t.Helper()
	if err := s.Server.RevokeChannels(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// DeleteUser deletes the user name (ACL DELUSER): Redis disconnects every
// client authenticated as it.
func (s *Server) DeleteUser(t testing.TB, name string) {
	t.Helper()
	if err := s.Server.DeleteUser(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// StartTLS starts a server as Start does, listening with TLS only, with
// new certificates (redisproc.NewCerts) and, if authClients,
// tls-auth-clients yes. Its Certs give client configurations with and
// without a client certificate and with a wrong authority; its TLSConfig
// and NewClient connect with the client certificate.
func StartTLS(t testing.TB, authClients bool, args ...string) *Server {
	t.Helper()
	return StartOptions(t, redisproc.Options{Args: args, TLS: &redisproc.TLSOptions{AuthClients: authClients}})
}

// Info runs INFO section and returns its fields, for example
// srv.Info(t, "stats")["pubsub_channels"].
func (s *Server) Info(t testing.TB, section string) map[string]string {
	t.Helper()
	m, err := s.Server.Info(context.Background(), section)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ClusterInfo runs CLUSTER INFO on a cluster node and returns its fields.
func (s *Server) ClusterInfo(t testing.TB) map[string]string {
	t.Helper()
	m, err := s.Server.ClusterInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// PubSubCounters reads the server's counts of PUBLISH and SPUBLISH calls
// and, on a cluster node, of the cluster bus messages that carried them.
func (s *Server) PubSubCounters(t testing.TB) redisproc.PubSubCounters {
	t.Helper()
	c, err := s.Server.PubSubCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// started defaults *dir to a directory from t.TempDir and *logf to
// t.Logf, runs start, fails the test on its error and closes what it
// started in t.Cleanup. The directory comes first: cleanups run last-in
// first-out, so the processes are stopped before it is removed.
func started[T io.Closer](t testing.TB, dir *string, logf *func(string, ...any), start func() (T, error)) T {
	t.Helper()
	if *dir == "" {
		*dir = t.TempDir()
	}
	if *logf == nil {
		*logf = t.Logf
	}
	v, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return v
}
