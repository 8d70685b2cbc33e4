package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

// Sentinel is a master, its replicas and the Redis Sentinels that monitor
// them, started by StartSentinel and stopped in t.Cleanup. It embeds the
// *redisproc.Sentinel that runs it (MasterName, SentinelAddrs,
// FailoverOptions come from there); its own methods take a testing.TB,
// fail the test on error and return servers as *Server. Call them from the
// test goroutine.
type Sentinel struct {
	*redisproc.Sentinel
	servers   []*Server
	sentinels []*Server
	byProc    map[*redisproc.Server]*Server
}

// StartSentinel starts a master, its replicas and sentinels as
// redisproc.StartSentinel does (the zero options: one replica, one
// sentinel, master name "mymaster", down-after 1s), for example
//
//	sn := redistest.StartSentinel(t, redisproc.SentinelOptions{Sentinels: 3})
//	client := redis.NewFailoverClient(sn.FailoverOptions())
//
// An empty opts.Dir becomes a directory from t.TempDir, and opts.Logf, if
// nil, t.Logf. Every process is stopped in t.Cleanup.
func StartSentinel(t testing.TB, opts redisproc.SentinelOptions) *Sentinel {
	t.Helper()
	ps := started(t, &opts.Dir, &opts.Logf, func() (*redisproc.Sentinel, error) { return redisproc.StartSentinel(opts) })
	s := &Sentinel{Sentinel: ps, byProc: make(map[*redisproc.Server]*Server)}
	for _, p := range ps.Servers() {
		w := &Server{Server: p, t: t}
		s.servers = append(s.servers, w)
		s.byProc[p] = w
	}
	for _, p := range ps.Sentinels() {
		s.sentinels = append(s.sentinels, &Server{Server: p, t: t})
	}
	return s
}

// Servers returns the master and its replicas, running or not, the first
// master first.
func (s *Sentinel) Servers() []*Server { return append([]*Server(nil), s.servers...) }

// Sentinels returns the sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return append([]*Server(nil), s.sentinels...) }

// NewFailoverClient returns a go-redis client for the master, through the
// sentinels (redis.NewFailoverClient with FailoverOptions), closed in
// t.Cleanup.
func (s *Sentinel) NewFailoverClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(s.FailoverOptions())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Master returns the server the sentinels name as the master.
func (s *Sentinel) Master(t testing.TB) *Server {
	t.Helper()
	m, err := s.Sentinel.Master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.byProc[m]
}

// WaitOK waits, bounded by 30s, until the setup has settled as
// redisproc.Sentinel.WaitOK describes; it fails the test otherwise. Call
// it after restarting a process.
func (s *Sentinel) WaitOK(t testing.TB) {
	t.Helper()
	if err := s.Sentinel.WaitOK(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// KillMaster kills the current master and returns the replica the
// sentinels promoted, once the setup has settled. Restart of the old
// master and WaitOK bring it back, as a replica (about 8s after the
// restart: Sentinel waits that long before it reconfigures it).
func (s *Sentinel) KillMaster(t testing.TB) *Server {
	t.Helper()
	m, err := s.Sentinel.KillMaster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.byProc[m]
}
