//go:build linux

// Command soak runs Publishers and Subscribers of redispubsub against a
// redis-server of its own for a while, killing the server (SIGKILL, then a
// restart on the same port) and the Subscribers' connections (CLIENT KILL
// TYPE pubsub) now and then, and prints what it measured:
//
//	go run ./cmd/soak -duration 10m
//	go run ./cmd/soak -duration 1m -kill-every 15s -client-kill-every 5s
//
// Every Subscriber subscribes every topic and the pattern of all of them
// before the Publishers start, and Acks every message at once. With
// -recover the Publishers keep a history, the Subscribers recover from it
// (their pattern subscription too, per channel), the server keeps an
// append-only file, and the accounting requires what was missed to be 0,
// with nothing unrecovered. At the end
// the faults stop, every Publisher publishes a marker on every topic, and
// soak waits until every subscription got them; then it checks, for each
// Subscriber, that what its subscriptions never got is what it counted:
//
//	Σ over its subscriptions and streams (publisher, topic) of
//	    (last number received + 1) − distinct numbers received
//	  = Stats().Gaps + Stats().Dropped
//
// and prints messages/s published and received, reconnects and the time
// they took, gaps, drops, decode failures, duplicates (dropped by the
// Subscribers, and delivered), publish errors, and the process's RSS (VmRSS)
// at the start, its maximum and at the end. It exits with status 1 when an
// identity does not hold, a duplicate was delivered or the end phase does
// not complete, 2 on a setup error.
//
// The go-redis clients keep go-redis's default options (so MaxRetries 3: a
// pipeline whose connection breaks after Redis ran it is sent again, and
// its second copies must be dropped), unless -publisher-retries says
// otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

type config struct {
	duration         time.Duration
	publishers       int
	subscribers      int
	topics           int
	rate             int
	killEvery        time.Duration
	down             time.Duration
	clientKillEvery  time.Duration
	redisServer      string
	publisherRetries int
	endTimeout       time.Duration
	// recover: Publishers with a History, Subscribers with Recover (the
	// pattern subscription recovers per channel), the server with an
	// append-only file (fsync always) so that the history survives its
	// kills.
	recover bool
}

func main() {
	var c config
	flag.DurationVar(&c.duration, "duration", time.Minute, "how long messages flow and faults happen")
	flag.IntVar(&c.publishers, "publishers", 4, "Publishers, each with its own go-redis client")
	flag.IntVar(&c.subscribers, "subscribers", 2, "Subscribers, each with its own client, subscribed to every topic and to the pattern of all")
	flag.IntVar(&c.topics, "topics", 8, "topics")
	flag.IntVar(&c.rate, "rate", 250, "messages per second per Publisher (0: as fast as it goes)")
	flag.DurationVar(&c.killEvery, "kill-every", 30*time.Second, "SIGKILL the server and restart it on the same port this often (0: never)")
	flag.DurationVar(&c.down, "down", 500*time.Millisecond, "how long the killed server stays down")
	flag.DurationVar(&c.clientKillEvery, "client-kill-every", 7*time.Second, "CLIENT KILL TYPE pubsub this often (0: never)")
	flag.StringVar(&c.redisServer, "redis-server", "", "redis-server binary (default: $REDIS_SERVER, else PATH)")
	flag.IntVar(&c.publisherRetries, "publisher-retries", 0, "MaxRetries of the Publishers' clients (0: go-redis's default, 3; -1: none)")
	flag.DurationVar(&c.endTimeout, "end-timeout", time.Minute, "bound of the end phase (markers, closing)")
	flag.BoolVar(&c.recover, "recover", false, "Publishers with a history, Subscribers with Recover (topics and pattern; the server keeps an append-only file, fsync always): the accounting then requires missing = 0")
	flag.Parse()
	if c.publishers < 1 || c.subscribers < 1 || c.topics < 1 || c.duration <= 0 {
		fmt.Fprintln(os.Stderr, "soak: -publishers, -subscribers, -topics and -duration must be positive")
		os.Exit(2)
	}
	redis.SetLogger(&goRedisLog) // go-redis logs every failed dial: counted, the last one printed
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, c))
}

// goRedisLog counts go-redis's internal log lines and keeps the last one.
var goRedisLog countingLog

type countingLog struct {
	mu    sync.Mutex
	count int
	last  string
}

func (l *countingLog) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	l.count++
	l.last = fmt.Sprintf(format, v...)
	l.mu.Unlock()
}

func run(ctx context.Context, c config) int {
	opts := redisproc.Options{Binary: c.redisServer}
	if c.recover {
		opts.Args = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	srv, err := redisproc.Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	defer func() {
		if err := srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
		}
	}()
	subscribed := "topics + 1 pattern"
	if c.recover {
		subscribed = "topics + 1 pattern, recovering from a history (server with an append-only file)"
	}
	fmt.Printf("soak: %s on %s (%s); %v, %d publishers at %d msg/s each, %d subscribers, %d %s; kill every %v (down %v), CLIENT KILL every %v\n",
		srv.Binary(), srv.Addr(), srv.Dir(), c.duration, c.publishers, c.rate, c.subscribers, c.topics, subscribed, c.killEvery, c.down, c.clientKillEvery)

	mem := startMemory()
	s := newSoak(c, srv)
	if err := s.setup(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "soak: setup:", err)
		s.closeAll()
		return 2
	}
	start := time.Now()
	s.startPublishers()
	s.startFaults()
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
	timer := time.NewTimer(c.duration)
	defer timer.Stop()
loop:
	for {
		select {
		case <-timer.C:
			break loop
		case <-ctx.Done():
			fmt.Println("soak: interrupted")
			break loop
		case <-progress.C:
			s.printProgress(start, mem)
		}
	}
	s.stopFaults()
	s.stopPublishers()
	flowed := time.Since(start)
	ok := s.finish(flowed, mem)
	mem.stop()
	s.printMemory(mem)
	if !ok {
		fmt.Println("soak: FAIL")
		return 1
	}
	fmt.Println("soak: PASS")
	return 0
}
