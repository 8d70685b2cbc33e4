// Package exampleredis gives the examples a Redis client: the server named by
// the REDIS_URL environment variable when it is set, else an embedded
// in-process Redis (miniredis), so that `go run ./examples/...` works on a
// machine without Redis. It also gives them their quiet Watermill Logger and
// the Printer that tells their story on stdout.
//
// It is for the examples only. The embedded server is not Redis: its Pub/Sub
// has no sharded commands and PUBLISH waits for slow readers, so the
// package's own tests run against a real redis-server instead.
package exampleredis

import (
	"errors"
	"fmt"
	neturl "net/url"
	"os"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Client returns a Redis client and a func that closes it (and the embedded
// server, if one was started). It reports the choice on stderr.
//
// With REDIS_URL set (e.g. "redis://127.0.0.1:6379/0", any URL that
// redis.ParseURL accepts) it connects there; otherwise it starts miniredis on
// a free local port and connects to it. Either way the client has
// ContextTimeoutEnabled, so that a message's context bounds a PUBLISH.
// The report names the server's address only, and the error of a URL that
// does not parse leaves the URL out: neither shows the URL's password.
func Client() (redis.UniversalClient, func(), error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			// net/url puts the whole URL, password included, in its
			// errors: report only what is wrong with it.
			var urlErr *neturl.Error
			if errors.As(err, &urlErr) {
				err = urlErr.Err
			}
			return nil, nil, fmt.Errorf("exampleredis: REDIS_URL: %w", err)
		}
		opts.ContextTimeoutEnabled = true
		fmt.Fprintf(os.Stderr, "using Redis at %s (REDIS_URL)\n", opts.Addr)
		c := redis.NewClient(opts)
		return c, func() { _ = c.Close() }, nil
	}

	srv, err := miniredis.Run()
	if err != nil {
		return nil, nil, fmt.Errorf("exampleredis: start miniredis: %w", err)
	}
	fmt.Fprintln(os.Stderr, "no REDIS_URL: using an embedded in-process Redis (miniredis)")
	// go-redis's default protocol (RESP3, HELLO 3) works with miniredis v2.40:
	// it answers HELLO 3 and sends (p)subscribe confirmations and messages as
	// RESP3 push replies, so no Protocol: 2 is needed. (Its PING reply on a
	// subscribed connection is a ["pong", ""] array where Redis sends +PONG;
	// go-redis reads both as *redis.Pong.)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	return c, func() {
		_ = c.Close()
		srv.Close()
	}, nil
}
