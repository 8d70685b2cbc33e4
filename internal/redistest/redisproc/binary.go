// Package redisproc starts, kills, restarts and stops real redis-server
// processes on free 127.0.0.1 ports, reporting failures as errors: it needs
// no testing.TB, so commands (cmd/soak, benchmarks) use it as well as tests.
// Package redistest wraps it for tests, with t.Fatal and t.Cleanup.
//
// Every server runs without persistence in a directory of its own and is
// reaped by Kill, Stop and Close, so no process is left behind; on Linux the
// kernel also kills it when the process that started it dies. The Redis
// server listening on the default port 6379, if any, is never used.
package redisproc

import (
	"errors"
	"os"
	"os/exec"
)

// EnvBinary is the environment variable that, when set, names the
// redis-server binary to use instead of looking it up.
const EnvBinary = "REDIS_SERVER"

// ErrNoBinary is returned by Binary when no redis-server can be found. Its
// text names the ways to install one.
var ErrNoBinary = errors.New("redis-server not found: run scripts/test.sh " +
	"(installs it with apt when root), or install it: " +
	"apt-get install redis-server / brew install redis, or set REDIS_SERVER")

// fallbackPaths are tried, in order, when redis-server is not on PATH.
var fallbackPaths = []string{
	"/usr/bin/redis-server",
	"/usr/sbin/redis-server",
	"/usr/local/bin/redis-server",
}

// Binary returns the path of redis-server: $REDIS_SERVER if set, else PATH
// lookup, else /usr/bin/redis-server, /usr/sbin/redis-server,
// /usr/local/bin/redis-server. It returns an error wrapping ErrNoBinary,
// whose text names the install step, when none is found or when
// $REDIS_SERVER names no executable file.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", &binaryError{path: p}
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range fallbackPaths {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", ErrNoBinary
}

// binaryError reports a $REDIS_SERVER that names no executable file.
type binaryError struct{ path string }

func (e *binaryError) Error() string {
	return EnvBinary + "=" + e.path + " is not an executable file; " + ErrNoBinary.Error()
}

func (e *binaryError) Unwrap() error { return ErrNoBinary }

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
