package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// rawChunk is the number of channels per SUBSCRIBE of raw go-redis.
const rawChunk = 1000

// rawTransport is raw go-redis: the yardstick.
type rawTransport struct {
	prefix   string
	sharded  bool // SPUBLISH and SSUBSCRIBE
	pub, sub redis.UniversalClient
}

func openRaw(cfg Config, on target) (transport, error) {
	return &rawTransport{prefix: cfg.Prefix, sharded: on.sharded, pub: on.newClient(), sub: on.newClient()}, nil
}

// command returns the PUBLISH, or SPUBLISH, of payload on channel. Its
// first key is the channel, as the adapter says: a ClusterClient sends it
// to the node that owns the channel's slot (PUBLISH has no key, and would
// go to a random node).
func (r *rawTransport) command(ctx context.Context, channel string, payload []byte) *redis.IntCmd {
	var cmd *redis.IntCmd
	if r.sharded { // the names are constants: a variable would cost an allocation
		cmd = redis.NewIntCmd(ctx, "spublish", channel, payload)
	} else {
		cmd = redis.NewIntCmd(ctx, "publish", channel, payload)
	}
	cmd.SetFirstKeyPos(1)
	return cmd
}

func (r *rawTransport) publish(ctx context.Context, topic string, payload []byte, n int) error {
	channel := r.prefix + topic
	if n == 1 {
		cmd := r.command(ctx, channel, payload)
		_ = r.pub.Process(ctx, cmd)
		return cmd.Err()
	}
	_, err := r.pub.Pipelined(ctx, func(p redis.Pipeliner) error {
		for range n {
			_ = p.Process(ctx, r.command(ctx, channel, payload))
		}
		return nil
	})
	return err
}

// consume subscribes every topic on one PubSub, in one SUBSCRIBE; sharded,
// on one PubSub per node that owns a topic's slot, one SSUBSCRIBE per topic
// (go-redis sends one SSUBSCRIBE of a call's channels, which Redis refuses
// when their slots differ).
func (r *rawTransport) consume(ctx context.Context, topics []string, onMsg func()) (func(), error) {
	var groups [][]string // the channels of each PubSub
	if r.sharded {
		var err error
		if groups, err = r.byNode(ctx, topics); err != nil {
			return nil, err
		}
	} else {
		groups = [][]string{make([]string, len(topics))}
		for i, topic := range topics {
			groups[0][i] = r.prefix + topic
		}
	}
	var pss []*redis.PubSub
	var wg sync.WaitGroup
	stop := func() {
		for _, ps := range pss {
			// Close ends the blocked read; a context would not (go-redis
			// does not interrupt a read in progress).
			_ = ps.Close()
		}
		wg.Wait()
	}
	for _, channels := range groups {
		ps, err := r.subscribe(ctx, channels)
		if err != nil {
			stop()
			return nil, err
		}
		pss = append(pss, ps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := ps.ReceiveMessage(context.Background()); err != nil {
					return
				}
				onMsg()
			}
		}()
	}
	return stop, nil
}

// byNode groups the channels of topics by the node that owns their slot
// (a client of one server: one group).
func (r *rawTransport) byNode(ctx context.Context, topics []string) ([][]string, error) {
	cluster, ok := r.sub.(*redis.ClusterClient)
	var groups [][]string
	index := map[string]int{}
	for _, topic := range topics {
		channel, node := r.prefix+topic, ""
		if ok {
			master, err := cluster.MasterForKey(ctx, channel)
			if err != nil {
				return nil, err
			}
			node = master.Options().Addr
		}
		i, seen := index[node]
		if !seen {
			i = len(groups)
			index[node] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], channel)
	}
	return groups, nil
}

// subscribe subscribes channels on a new PubSub and returns once Redis
// confirmed every one.
func (r *rawTransport) subscribe(ctx context.Context, channels []string) (*redis.PubSub, error) {
	var ps *redis.PubSub
	var err error
	if r.sharded {
		// The PubSub connects to the node of its first channel.
		ps = r.sub.SSubscribe(ctx, channels[0])
		for _, channel := range channels[1:] {
			if err = ps.SSubscribe(ctx, channel); err != nil {
				break
			}
		}
	} else {
		ps = r.sub.Subscribe(ctx, channels...)
	}
	for n := 0; n < len(channels) && err == nil; {
		var msg any
		if msg, err = ps.Receive(ctx); err == nil {
			if _, ok := msg.(*redis.Subscription); ok {
				n++
			}
		}
	}
	if err != nil {
		_ = ps.Close()
		return nil, err
	}
	return ps, nil
}

func (r *rawTransport) prepareTopics(topics []string, _ int, _ bool) (topicSet, error) {
	// No channel yet: the PubSub connects on its first use.
	return &rawTopics{ps: r.sub.Subscribe(context.Background()), prefix: r.prefix, topics: topics}, nil
}

func (r *rawTransport) flush() error { return nil } // publish waited for the replies

func (r *rawTransport) diagnose() string { return "" }

func (r *rawTransport) close() error {
	return errors.Join(r.pub.Close(), r.sub.Close())
}

// rawTopics subscribes its topics on one PubSub, rawChunk per SUBSCRIBE,
// while one goroutine counts the confirmations.
type rawTopics struct {
	ps     *redis.PubSub
	prefix string
	topics []string
	closed bool
}

func (t *rawTopics) subscribeAll(ctx context.Context) error {
	confirmed := make(chan error, 1)
	go func() {
		for n := 0; n < len(t.topics); {
			msg, err := t.ps.Receive(ctx)
			if err != nil {
				confirmed <- err
				return
			}
			if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
				n++
			}
		}
		confirmed <- nil
	}()
	// The channel names are made here, as the adapter makes them: the
	// PubSub keeps them, and they count in its heap per topic.
	chunk := make([]string, 0, rawChunk)
	for i, topic := range t.topics {
		chunk = append(chunk, t.prefix+topic)
		if len(chunk) < rawChunk && i < len(t.topics)-1 {
			continue
		}
		if err := t.ps.Subscribe(ctx, chunk...); err != nil {
			_ = t.close() // ends the reader
			<-confirmed
			return fmt.Errorf("SUBSCRIBE: %w", err)
		}
		chunk = chunk[:0]
	}
	select {
	case err := <-confirmed:
		return err
	case <-ctx.Done():
		_ = t.close()
		<-confirmed
		return ctx.Err()
	}
}

func (t *rawTopics) close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	return t.ps.Close()
}
