package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// The marshalers of the adapter's columns.
var (
	envelope redispubsub.Marshaler = redispubsub.JSONEnvelopeMarshaler{}
	rawJSON  redispubsub.Marshaler = redispubsub.RawJSONMarshaler{}
	msgpack  redispubsub.Marshaler = redispubsub.MsgpackMarshaler{}
)

// streamMaxLen caps the streams of redisstream (approximately, MAXLEN ~),
// far above what a measurement has in flight.
const streamMaxLen = 10_000

// wmTransport is a Watermill Publisher and Subscriber.
type wmTransport struct {
	pub message.Publisher
	sub message.Subscriber
	// name maps a topic to the Watermill topic (a prefix where the system
	// has no option for one).
	name    func(topic string) string
	closeFn func() error
	stats   func() string // nil: nothing to say
	// subscribed, when set, returns once the server has the subscriptions
	// that Subscribe returned from (where Subscribe does not wait for it).
	subscribed func() error
	// flushFn, when set, returns once the server has every message
	// published (where Publish returns before it has them).
	flushFn func() error
	ids     atomic.Uint64
}

func openAdapter(m redispubsub.Marshaler) func(Config, target) (transport, error) {
	return func(cfg Config, on target) (transport, error) {
		pc, sc := on.newClient(), on.newClient()
		closeClients := func() error { return errors.Join(pc.Close(), sc.Close()) }
		pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
			Client: pc, ChannelPrefix: cfg.Prefix, Marshaler: m, Sharded: on.sharded,
		}, nil)
		if err != nil {
			return nil, errors.Join(err, closeClients())
		}
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
			Client: sc, ChannelPrefix: cfg.Prefix, Marshaler: m, Sharded: on.sharded, MaxInFlight: on.maxInFlight,
			ProbeInterval: on.probeInterval,
		}, nil)
		if err != nil {
			return nil, errors.Join(err, pub.Close(), closeClients())
		}
		return &wmTransport{
			pub:  pub,
			sub:  sub,
			name: func(t string) string { return t },
			closeFn: func() error {
				return errors.Join(sub.Close(), pub.Close(), closeClients())
			},
			stats: func() string {
				s := sub.Stats()
				return fmt.Sprintf("subscriber: received %d, delivered %d, dropped %d, decode failures %d, gaps %d, reconnects %d",
					s.Received, s.Delivered, s.Dropped, s.DecodeFailures, s.Gaps, s.Reconnects)
			},
		}, nil
	}
}

// openRedisStream opens watermill-redisstream with a consumer group, whose
// Subscribe returns once the group exists, so that what is added after it
// returned is read. Its Publisher and Subscriber close the clients they
// are given.
func openRedisStream(cfg Config, on target) (transport, error) {
	pc, sc := on.newClient(), on.newClient()
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: pc, DefaultMaxlen: streamMaxLen}, nil)
	if err != nil {
		return nil, errors.Join(err, pc.Close(), sc.Close())
	}
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        sc,
		ConsumerGroup: "bench",
		OldestId:      "$",
		// Without it a cancelled subscription's first read blocks until a
		// message comes, and Close waits for it.
		DisableIndefiniteInitialBlock: true,
	}, nil)
	if err != nil {
		return nil, errors.Join(err, pub.Close(), sc.Close())
	}
	return &wmTransport{
		pub:     pub,
		sub:     sub,
		name:    func(t string) string { return cfg.Prefix + t },
		closeFn: func() error { return errors.Join(sub.Close(), pub.Close()) },
	}, nil
}

func openGoChannel(Config, target) (transport, error) {
	gc := gochannel.NewGoChannel(gochannel.Config{}, nil)
	return &wmTransport{
		pub:     gc,
		sub:     gc,
		name:    func(t string) string { return t },
		closeFn: gc.Close,
	}, nil
}

// publish makes n messages with cheap UUIDs (a counter), so that the
// figures measure the transport and not UUID generation.
func (w *wmTransport) publish(ctx context.Context, topic string, payload []byte, n int) error {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(strconv.FormatUint(w.ids.Add(1), 10), payload)
		msgs[i].SetContext(ctx)
	}
	return w.pub.Publish(w.name(topic), msgs...)
}

// consume subscribes every topic, one Subscribe call after the other.
func (w *wmTransport) consume(ctx context.Context, topics []string, onMsg func()) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop := func() {
		cancel()
		wg.Wait()
	}
	for _, topic := range topics {
		ch, err := w.sub.Subscribe(ctx, w.name(topic))
		if err != nil {
			stop()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range ch {
				msg.Ack()
				onMsg()
			}
		}()
	}
	if w.subscribed != nil {
		if err := w.subscribed(); err != nil {
			stop()
			return nil, err
		}
	}
	return stop, nil
}

func (w *wmTransport) flush() error {
	if w.flushFn == nil {
		return nil
	}
	return w.flushFn()
}

func (w *wmTransport) prepareTopics(topics []string, workers int, eventTarget bool) (topicSet, error) {
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = w.name(t)
	}
	if eventTarget {
		return newTargetTopics(w.pub, w.sub, names, workers)
	}
	return newWatermillTopics(w.sub, names, workers), nil
}

func (w *wmTransport) diagnose() string {
	if w.stats == nil {
		return ""
	}
	return w.stats()
}

func (w *wmTransport) close() error { return w.closeFn() }
