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
// before the Publishers start, and Acks every message at once. At the end
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
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
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
	bin, err := redisBinary(c.redisServer)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "soak-redis-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(bin, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	}
	defer srv.kill()
	fmt.Printf("soak: %s on %s (%s); %v, %d publishers at %d msg/s each, %d subscribers, %d topics + 1 pattern; kill every %v (down %v), CLIENT KILL every %v\n",
		bin, srv.addr(), dir, c.duration, c.publishers, c.rate, c.subscribers, c.topics, c.killEvery, c.down, c.clientKillEvery)

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

// ---- the server --------------------------------------------------------

// server is one redis-server process, restarted on the same port.
type server struct {
	bin, dir string
	port     int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func redisBinary(flagged string) (string, error) {
	for _, p := range []string{flagged, os.Getenv("REDIS_SERVER")} {
		if p != "" {
			return p, nil
		}
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("redis-server not found: install it (apt-get install redis-server) or pass -redis-server")
}

func startServer(bin, dir string) (*server, error) {
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		s := &server{bin: bin, dir: dir, port: port}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// launch starts redis-server and waits until it answers PING.
func (s *server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no")
	cmd.Dir = s.dir
	// The server dies with soak, whatever happens to soak.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.reap()
			return fmt.Errorf("redis-server on %s did not answer within 10s: %v", s.addr(), err)
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("redis-server on %s exited at start; see %s", s.addr(), filepath.Join(s.dir, "redis.log"))
		case <-time.After(10 * time.Millisecond): // poll interval
		}
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (s *server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reap()
}

func (s *server) reap() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// restart starts the server again on the same port, retrying while the
// port is still held.
func (s *server) restart() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.launch()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // backoff between bounded retries
	}
}

// ping sends PING on a fresh connection and reads +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

// ---- the run -----------------------------------------------------------

type soak struct {
	c      config
	srv    *server
	topics []string
	admin  *redis.Client

	pubs      []*publisher
	subs      []*subscriber
	pubCancel context.CancelFunc
	pubWG     sync.WaitGroup

	faultsStop chan struct{}
	faultsWG   sync.WaitGroup
	kills      atomic.Int64
	clientKill atomic.Int64
	faultErrs  atomic.Int64

	// resume times: from the server answering again (or the CLIENT KILL)
	// to each Subscriber's OnReconnect.
	faultMu    sync.Mutex
	lastFault  time.Time
	faultKind  string
	resumeKill []time.Duration
	resumeCK   []time.Duration
}

type publisher struct {
	index  int
	client *redis.Client
	pub    *redispubsub.Publisher

	mu     sync.Mutex
	next   []int // next number per topic
	okMsgs int64
	errs   int64
}

type subscriber struct {
	index  int
	client *redis.Client
	sub    *redispubsub.Subscriber
	subs   []*subscription
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reconnectMu sync.Mutex
	reconnects  []time.Time
}

// subscription records what one subscription received.
type subscription struct {
	name       string
	fixedTopic string
	topics     []int // indexes of the topics it covers

	mu         sync.Mutex
	streams    map[stream]*bitset
	duplicates int64
	markers    int
	unparsable int64
	delivered  atomic.Int64
}

type stream struct{ pub, topic int }

type payload struct {
	P int  `json:"p"`
	T int  `json:"t"`
	N int  `json:"n"`
	M bool `json:"m,omitempty"`
}

func newSoak(c config, srv *server) *soak {
	s := &soak{c: c, srv: srv, faultsStop: make(chan struct{})}
	for i := range c.topics {
		s.topics = append(s.topics, fmt.Sprintf("soak.t%d", i))
	}
	s.admin = redis.NewClient(&redis.Options{Addr: srv.addr(), MaxRetries: -1, DialTimeout: time.Second})
	return s
}

func (s *soak) setup(ctx context.Context) error {
	for i := range s.c.subscribers {
		sb := &subscriber{index: i, client: redis.NewClient(&redis.Options{Addr: s.srv.addr()})}
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
			Client: sb.client,
			OnReconnect: func(redispubsub.ReconnectEvent) {
				now := time.Now()
				sb.reconnectMu.Lock()
				sb.reconnects = append(sb.reconnects, now)
				sb.reconnectMu.Unlock()
				s.noteResume(now)
			},
		}, nil)
		if err != nil {
			return err
		}
		sb.sub = sub
		s.subs = append(s.subs, sb)
		sctx, cancel := context.WithCancel(context.Background())
		sb.cancel = cancel
		all := make([]int, len(s.topics))
		for t, topic := range s.topics {
			all[t] = t
			ch, err := sub.Subscribe(sctx, topic)
			if err != nil {
				return err
			}
			sb.consume(&subscription{name: fmt.Sprintf("sub%d/%s", i, topic), fixedTopic: topic, topics: []int{t}}, ch)
		}
		ch, err := sub.SubscribePattern(sctx, "soak.*")
		if err != nil {
			return err
		}
		sb.consume(&subscription{name: fmt.Sprintf("sub%d/soak.*", i), topics: all}, ch)
	}
	for i := range s.c.publishers {
		opts := &redis.Options{Addr: s.srv.addr(), MaxRetries: s.c.publisherRetries}
		p := &publisher{index: i, client: redis.NewClient(opts), next: make([]int, len(s.topics))}
		pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: p.client}, nil)
		if err != nil {
			return err
		}
		p.pub = pub
		s.pubs = append(s.pubs, p)
	}
	return ctx.Err()
}

func (sb *subscriber) consume(sn *subscription, ch <-chan *message.Message) {
	sn.streams = make(map[stream]*bitset)
	sb.subs = append(sb.subs, sn)
	sb.wg.Add(1)
	go func() {
		defer sb.wg.Done()
		for msg := range ch {
			var p payload
			err := json.Unmarshal(msg.Payload, &p)
			msg.Ack()
			sn.delivered.Add(1)
			sn.mu.Lock()
			if err != nil {
				sn.unparsable++
			} else {
				st := stream{p.P, p.T}
				bs := sn.streams[st]
				if bs == nil {
					bs = &bitset{}
					sn.streams[st] = bs
				}
				if !bs.set(p.N) {
					sn.duplicates++
				} else if p.M {
					sn.markers++
				}
			}
			sn.mu.Unlock()
		}
	}()
}

func (s *soak) startPublishers() {
	ctx, cancel := context.WithCancel(context.Background())
	s.pubCancel = cancel
	for _, p := range s.pubs {
		s.pubWG.Add(1)
		go func() {
			defer s.pubWG.Done()
			s.publish(ctx, p)
		}()
	}
}

func (s *soak) publish(ctx context.Context, p *publisher) {
	var tick <-chan time.Time
	if s.c.rate > 0 {
		ticker := time.NewTicker(time.Second / time.Duration(s.c.rate))
		defer ticker.Stop()
		tick = ticker.C
	}
	for i := p.index; ; i++ {
		if tick != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		} else if ctx.Err() != nil {
			return
		}
		t := i % len(s.topics)
		p.mu.Lock()
		n := p.next[t]
		p.next[t]++
		p.mu.Unlock()
		if err := s.publishOne(p, t, payload{P: p.index, T: t, N: n}, 2*time.Second); err != nil {
			p.mu.Lock()
			p.errs++
			p.mu.Unlock()
		} else {
			p.mu.Lock()
			p.okMsgs++
			p.mu.Unlock()
		}
	}
}

func (s *soak) publishOne(p *publisher, t int, pl payload, timeout time.Duration) error {
	body, _ := json.Marshal(pl)
	msg := message.NewMessage(watermill.NewUUID(), body)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msg.SetContext(ctx)
	return p.pub.Publish(s.topics[t], msg)
}

func (s *soak) stopPublishers() {
	s.pubCancel()
	s.pubWG.Wait()
}

// ---- faults ------------------------------------------------------------

func (s *soak) startFaults() {
	if s.c.killEvery > 0 {
		s.faultsWG.Add(1)
		go s.every(s.c.killEvery, func() {
			s.srv.kill()
			select {
			case <-time.After(s.c.down):
			case <-s.faultsStop:
			}
			// Noted before the restart, so that no reconnect precedes it:
			// resume times include the server's start (a few ms).
			s.noteFault("kill")
			if err := s.srv.restart(); err != nil {
				fmt.Println("soak: restart:", err)
				s.faultErrs.Add(1)
				return
			}
			s.kills.Add(1)
		})
	}
	if s.c.clientKillEvery > 0 {
		s.faultsWG.Add(1)
		go s.every(s.c.clientKillEvery, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s.noteFault("client-kill")
			if _, err := s.admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil {
				return // the server may be down at that moment
			}
			s.clientKill.Add(1)
		})
	}
}

func (s *soak) every(d time.Duration, fault func()) {
	defer s.faultsWG.Done()
	ticker := time.NewTicker(d)
	defer ticker.Stop()
	for {
		select {
		case <-s.faultsStop:
			return
		case <-ticker.C:
			fault()
		}
	}
}

func (s *soak) stopFaults() {
	close(s.faultsStop)
	s.faultsWG.Wait()
}

func (s *soak) noteFault(kind string) {
	s.faultMu.Lock()
	s.lastFault, s.faultKind = time.Now(), kind
	s.faultMu.Unlock()
}

// noteResume records how long after the last fault (noted just before it
// was made) a Subscriber reported its reconnect. A reconnect that follows a
// fault by more than 30s is not attributed.
func (s *soak) noteResume(at time.Time) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.lastFault.IsZero() {
		return
	}
	d := at.Sub(s.lastFault)
	if d < 0 || d > 30*time.Second {
		return
	}
	if s.faultKind == "kill" {
		s.resumeKill = append(s.resumeKill, d)
	} else {
		s.resumeCK = append(s.resumeCK, d)
	}
}

// ---- the end -----------------------------------------------------------

func (s *soak) printProgress(start time.Time, mem *memory) {
	var published, errs int64
	for _, p := range s.pubs {
		p.mu.Lock()
		published += p.okMsgs
		errs += p.errs
		p.mu.Unlock()
	}
	var delivered int64
	var st redispubsub.SubscriberStats
	for _, sb := range s.subs {
		for _, sn := range sb.subs {
			delivered += sn.delivered.Load()
		}
		x := sb.sub.Stats()
		st.Reconnects += x.Reconnects
		st.Gaps += x.Gaps
		st.Dropped += x.Dropped
	}
	el := time.Since(start).Seconds()
	fmt.Printf("soak: %5.0fs published %d (%.0f/s), publish errors %d, delivered %d (%.0f/s), server kills %d, client kills %d, reconnects %d, gaps %d, drops %d, RSS %s\n",
		el, published, float64(published)/el, errs, delivered, float64(delivered)/el,
		s.kills.Load(), s.clientKill.Load(), st.Reconnects, st.Gaps, st.Dropped, kib(mem.rss()))
}

// finish publishes the markers, waits for them, checks the identities,
// prints the summary and closes everything. It reports whether all held.
func (s *soak) finish(flowed time.Duration, mem *memory) bool {
	ok := true
	endStart := time.Now()
	deadline := endStart.Add(s.c.endTimeout)
	// Every Subscriber has its subscriptions in place again.
	want := int64(len(s.subs))
	for {
		if s.subscribedEverywhere(want) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Println("soak: FAIL: the Subscribers did not resubscribe everything before the end timeout")
			s.closeAll()
			return false
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	// Markers, until every subscription has every one.
	wantMarkers := func(sn *subscription) int { return len(s.pubs) * len(sn.topics) }
	for _, p := range s.pubs {
		for t := range s.topics {
			p.mu.Lock()
			n := p.next[t]
			p.next[t]++
			p.mu.Unlock()
			if err := s.publishOne(p, t, payload{P: p.index, T: t, N: n, M: true}, 10*time.Second); err != nil {
				fmt.Printf("soak: FAIL: marker of publisher %d on %s: %v\n", p.index, s.topics[t], err)
				ok = false
			}
		}
	}
	for _, sb := range s.subs {
		for _, sn := range sb.subs {
			for {
				sn.mu.Lock()
				got := sn.markers
				sn.mu.Unlock()
				if got >= wantMarkers(sn) {
					break
				}
				if time.Now().After(deadline) {
					fmt.Printf("soak: FAIL: %s got %d of %d markers before the end timeout\n", sn.name, got, wantMarkers(sn))
					ok = false
					break
				}
				time.Sleep(10 * time.Millisecond) // poll interval
			}
		}
	}

	// Stats before Close, which discards what is still queued.
	var published, pubErrs int64
	var ps redispubsub.PublisherStats
	for _, p := range s.pubs {
		p.mu.Lock()
		published += p.okMsgs
		pubErrs += p.errs
		p.mu.Unlock()
		x := p.pub.Stats()
		ps.Published += x.Published
		ps.Failed += x.Failed
		ps.NoSubscribers += x.NoSubscribers
	}
	var total redispubsub.SubscriberStats
	var delivered, duplicates, unparsable int64
	fmt.Println("soak: accounting per Subscriber: Σ (last number + 1 − distinct received) over its subscriptions and streams = Gaps + Dropped")
	for _, sb := range s.subs {
		st := sb.sub.Stats()
		var missing int64
		var parts []string
		for _, sn := range sb.subs {
			sn.mu.Lock()
			var m, distinct int64
			for _, bs := range sn.streams {
				last := bs.last()
				distinct += int64(bs.count)
				m += int64(last+1) - int64(bs.count)
			}
			duplicates += sn.duplicates
			unparsable += sn.unparsable
			sn.mu.Unlock()
			delivered += sn.delivered.Load()
			missing += m
			parts = append(parts, fmt.Sprintf("%s: %d received, %d missing", sn.name, distinct, m))
		}
		holds := uint64(missing) == st.Gaps+st.Dropped
		verdict := "holds"
		if !holds {
			verdict = "DOES NOT HOLD"
			ok = false
		}
		fmt.Printf("soak:   subscriber %d: missing %d, gaps %d + drops %d = %d: %s (reconnects %d, decode failures %d)\n",
			sb.index, missing, st.Gaps, st.Dropped, st.Gaps+st.Dropped, verdict, st.Reconnects, st.DecodeFailures)
		slices.Sort(parts)
		for _, part := range parts {
			fmt.Printf("soak:     %s\n", part)
		}
		total.Received += st.Received
		total.Reconnects += st.Reconnects
		total.Gaps += st.Gaps
		total.Dropped += st.Dropped
		total.DecodeFailures += st.DecodeFailures
		total.Duplicates += st.Duplicates
	}
	rssBeforeClose := mem.rss()
	closed := s.closeAll()
	if !closed {
		ok = false
	}

	sec := flowed.Seconds()
	fmt.Printf("soak: ran %v (+ end phase %v)\n", flowed.Round(time.Millisecond), time.Since(endStart).Round(time.Millisecond))
	fmt.Printf("soak: published %d messages (%.0f/s) with %d publish errors (Publisher stats: published %d, failed %d, to no subscriber %d)\n",
		published, float64(published)/sec, pubErrs, ps.Published, ps.Failed, ps.NoSubscribers)
	fmt.Printf("soak: received %d bodies from Redis (%.0f/s), delivered %d to consumers (%.0f/s); duplicates dropped by the Subscribers %d, delivered %d; unparsable %d\n",
		total.Received, float64(total.Received)/sec, delivered, float64(delivered)/sec, total.Duplicates, duplicates, unparsable)
	fmt.Printf("soak: faults: %d server kills, %d CLIENT KILL; reconnects %d; gaps %d; drops %d; decode failures %d; fault errors %d\n",
		s.kills.Load(), s.clientKill.Load(), total.Reconnects, total.Gaps, total.Dropped, total.DecodeFailures, s.faultErrs.Load())
	s.faultMu.Lock()
	fmt.Printf("soak: resume after a server kill (restart begun → OnReconnect): %s\n", summary(s.resumeKill))
	fmt.Printf("soak: resume after CLIENT KILL (CLIENT KILL sent → OnReconnect): %s\n", summary(s.resumeCK))
	s.faultMu.Unlock()
	fmt.Printf("soak: RSS before closing %s\n", kib(rssBeforeClose))
	goRedisLog.mu.Lock()
	fmt.Printf("soak: go-redis logged %d lines; the last: %s\n", goRedisLog.count, goRedisLog.last)
	goRedisLog.mu.Unlock()
	if duplicates > 0 {
		fmt.Println("soak: FAIL: duplicates delivered (go-redis retried a pipeline whose connection broke after Redis ran it)")
		ok = false
	}
	return ok
}

// subscribedEverywhere reports whether Redis has want pubsub clients, each
// subscribed to every topic and to the pattern.
func (s *soak) subscribedEverywhere(want int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	list, err := s.admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return false
	}
	var complete int64
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := strings.Fields(line)
		if slices.Contains(fields, "sub="+strconv.Itoa(len(s.topics))) && slices.Contains(fields, "psub=1") {
			complete++
		}
	}
	return complete == want
}

// closeAll closes every Subscriber, Publisher and client, bounded; it
// reports whether everything closed in time.
func (s *soak) closeAll() bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, sb := range s.subs {
			sb.cancel()
			_ = sb.sub.Close()
			sb.wg.Wait()
			_ = sb.client.Close()
		}
		for _, p := range s.pubs {
			_ = p.pub.Close()
			_ = p.client.Close()
		}
		_ = s.admin.Close()
	}()
	select {
	case <-done:
		return true
	case <-time.After(30 * time.Second):
		fmt.Println("soak: FAIL: closing the Subscribers and Publishers takes more than 30s")
		return false
	}
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("%d reconnects, min %v, median %v, mean %v, p95 %v, max %v",
		len(s), r(s[0]), r(s[len(s)/2]), r(sum/time.Duration(len(s))), r(s[len(s)*95/100]), r(s[len(s)-1]))
}

// ---- memory ------------------------------------------------------------

// memory samples VmRSS every second.
type memory struct {
	start, max atomic.Int64
	heapMax    atomic.Uint64
	done, quit chan struct{}
	end        int64
}

func startMemory() *memory {
	m := &memory{done: make(chan struct{}), quit: make(chan struct{})}
	m.start.Store(m.rss())
	m.max.Store(m.start.Load())
	go func() {
		defer close(m.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-m.quit:
				return
			case <-t.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *memory) sample() {
	if r := m.rss(); r > m.max.Load() {
		m.max.Store(r)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > m.heapMax.Load() {
		m.heapMax.Store(ms.HeapInuse)
	}
}

func (m *memory) stop() {
	close(m.quit)
	<-m.done
	m.sample()
	m.end = m.rss()
}

// rss returns VmRSS in KiB, or -1.
func (m *memory) rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func (s *soak) printMemory(m *memory) {
	fmt.Printf("soak: RSS start %s, max %s, end %s (after closing); Go HeapInuse max %.1f MiB\n",
		kib(m.start.Load()), kib(m.max.Load()), kib(m.end), float64(m.heapMax.Load())/(1<<20))
}

func kib(k int64) string {
	if k < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(k)/1024)
}

// ---- bitset ------------------------------------------------------------

// bitset records which numbers of a stream were received.
type bitset struct {
	words []uint64
	count int
	max   int
}

// set marks n and reports whether it was new.
func (b *bitset) set(n int) bool {
	if n < 0 {
		return false
	}
	w := n / 64
	for len(b.words) <= w {
		b.words = append(b.words, 0)
	}
	bit := uint64(1) << (n % 64)
	if b.words[w]&bit != 0 {
		return false
	}
	b.words[w] |= bit
	b.count++
	if b.count == 1 || n > b.max {
		b.max = n
	}
	return true
}

// last returns the largest number received, or -1.
func (b *bitset) last() int {
	if b.count == 0 {
		return -1
	}
	return b.max
}
