//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
)

type soak struct {
	c      config
	srv    *redisproc.Server
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
	// failed marks, per topic, the numbers whose Publish returned an
	// error (with -recover: a message never published is no message to
	// recover, unless Redis ran it before the error).
	failed []bitset
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

func newSoak(c config, srv *redisproc.Server) *soak {
	s := &soak{c: c, srv: srv, faultsStop: make(chan struct{})}
	for i := range c.topics {
		s.topics = append(s.topics, fmt.Sprintf("soak.t%d", i))
	}
	s.admin = redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	return s
}

func (s *soak) setup(ctx context.Context) error {
	for i := range s.c.subscribers {
		sb := &subscriber{index: i, client: redis.NewClient(&redis.Options{Addr: s.srv.Addr()})}
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
			Client:  sb.client,
			Recover: s.c.recover,
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
		opts := &redis.Options{Addr: s.srv.Addr(), MaxRetries: s.c.publisherRetries}
		p := &publisher{index: i, client: redis.NewClient(opts), next: make([]int, len(s.topics)), failed: make([]bitset, len(s.topics))}
		config := redispubsub.PublisherConfig{Client: p.client}
		if s.c.recover {
			config.History = redispubsub.History{Size: soakHistorySize}
		}
		pub, err := redispubsub.NewPublisher(config, nil)
		if err != nil {
			return err
		}
		p.pub = pub
		s.pubs = append(s.pubs, p)
	}
	return ctx.Err()
}

// soakHistorySize is each topic's history with -recover: far more than an
// outage of the soak publishes.
const soakHistorySize = 100_000

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
			p.failed[t].set(n)
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
