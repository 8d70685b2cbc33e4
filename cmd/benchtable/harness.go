package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
)

// TEMPORARY (issue 11): internal/redistest needs a testing.TB today. Until
// it has a core that does not, startServer runs redistest.Start with the
// stand-in below, which implements the few testing.TB methods Start and
// the server's cleanup call. Replace this file with the TB-free core.

// startServer starts a redis-server on a free port with the test harness
// and returns its address and the function that stops it.
func startServer() (addr string, stop func() error, err error) {
	tb := &harnessTB{}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(harnessFatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s%s", string(f), tb.runCleanups())
		}
	}()
	srv := redistest.Start(tb)
	return srv.Addr(), func() error {
		if msg := tb.runCleanups(); msg != "" {
			return fmt.Errorf("stop redis-server:%s", msg)
		}
		return nil
	}, nil
}

// harnessFatal is the panic value of harnessTB.Fatal.
type harnessFatal string

// harnessTB is a testing.TB for redistest.Start outside a test. The
// embedded interface is nil: a method not defined here panics, which is
// what a call the harness does not make today should do.
type harnessTB struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (t *harnessTB) Helper() {}

func (t *harnessTB) Fatal(args ...any) { panic(harnessFatal(fmt.Sprint(args...))) }

func (t *harnessTB) Fatalf(format string, args ...any) {
	panic(harnessFatal(fmt.Sprintf(format, args...)))
}

func (t *harnessTB) Errorf(format string, args ...any) {
	t.errs = append(t.errs, fmt.Sprintf(format, args...))
}

func (t *harnessTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (t *harnessTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

func (t *harnessTB) TempDir() string {
	dir, err := os.MkdirTemp("", "benchtable-redis-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// runCleanups runs the cleanups, last first, and returns the errors they
// reported, each on a line of its own, or "".
func (t *harnessTB) runCleanups() string {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}
	t.cleanups = nil
	if len(t.errs) == 0 {
		return ""
	}
	return "\n" + strings.Join(t.errs, "\n")
}
