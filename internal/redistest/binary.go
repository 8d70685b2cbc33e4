// Package redistest starts real redis-server processes for tests: single
// servers (with TLS and ACL users if asked), Redis Clusters with or without
// replicas (slot migration, failover), Sentinel setups (master killed,
// replica promoted), and a TCP proxy that can blackhole traffic.
// It wraps package redisproc, which does the process work and reports
// errors, for use from tests: failures call t.Fatal and everything started
// is stopped in t.Cleanup.
//
// Every server runs on a free 127.0.0.1 port in a directory from t.TempDir,
// without persistence, and is stopped and reaped in t.Cleanup, so tests share
// no state, use no fixed ports and leave no process or goroutine behind. The
// Redis server listening on the default port 6379, if any, is never used.
//
// Functions and methods that take a testing.TB, and the methods of Server
// that report failures through the testing.TB given to Start, call t.Fatal:
// call them from the test goroutine.
package redistest

import "github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"

// EnvBinary is the environment variable that, when set, names the
// redis-server binary to use instead of looking it up.
const EnvBinary = redisproc.EnvBinary

// ErrNoBinary is returned by Binary when no redis-server can be found. Its
// text names the ways to install one.
var ErrNoBinary = redisproc.ErrNoBinary

// Binary returns the path of redis-server as redisproc.Binary does:
// $REDIS_SERVER if set, else PATH lookup, else /usr/bin/redis-server,
// /usr/sbin/redis-server, /usr/local/bin/redis-server. It returns an error
// wrapping ErrNoBinary, whose text names the install step, when none is
// found or when $REDIS_SERVER names no executable file.
func Binary() (string, error) { return redisproc.Binary() }
