package redispubsub

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// PublisherConfig configures a Publisher. The zero value of every field but
// Client is a valid default.
type PublisherConfig struct {
	// Client sends the PUBLISH commands. Required. Any redis.UniversalClient
	// works: *redis.Client, a failover client, or *redis.ClusterClient, on
	// which PUBLISH reaches subscribers on every node and the messages of a
	// channel all go through the node of the channel's hash slot, in order.
	// (*redis.Ring is not supported: its shards do not share Pub/Sub.) The
	// Publisher never closes it.
	//
	// go-redis honours a message context's cancellation while a command is
	// on the wire only when the client's Options.ContextTimeoutEnabled is
	// true; otherwise a dead connection holds Publish up to the client's
	// ReadTimeout/WriteTimeout.
	Client redis.UniversalClient

	// ChannelPrefix is prepended to every topic to form the Redis channel,
	// e.g. "myapp:events:". Default: "" (raw topics, as a TypeScript
	// peer without a prefix uses). Set one in a shared Redis.
	ChannelPrefix string

	// Marshaler encodes messages. Default: JSONEnvelopeMarshaler{}.
	Marshaler Marshaler

	// DisableSequenceNumbers stops the Publisher from stamping each message
	// with its publisher id and a per-channel sequence number (metadata
	// MetadataPublisher and MetadataSequence), with which Subscribers count
	// the messages they never received. Default: false (stamped).
	DisableSequenceNumbers bool
}

func (c *PublisherConfig) setDefaults() {
	if c.Marshaler == nil {
		c.Marshaler = JSONEnvelopeMarshaler{}
	}
}

// Validate reports what is wrong with the config, wrapping ErrInvalidConfig.
func (c PublisherConfig) Validate() error {
	if c.Client == nil {
		return fmt.Errorf("%w: PublisherConfig.Client is required", ErrInvalidConfig)
	}
	return nil
}

// Publisher publishes Watermill messages on Redis Pub/Sub channels. It is
// safe for concurrent use: concurrent Publish calls are coalesced into shared
// pipelines, sent one after the other (the next once Redis answered the
// previous), so that messages reach Redis in the order their Publish calls
// were made. (A pipeline abandoned because its callers' contexts ended may
// still run after the next; its callers got an error.)
type Publisher struct {
	config PublisherConfig
	logger watermill.LoggerAdapter
	id     string // stamped in MetadataPublisher

	mu        sync.Mutex
	wake      *sync.Cond // signalled when pending grows or the Publisher closes
	pending   []*publishCall
	sending   bool              // a batch is on the wire: the next waits, to keep the order
	sequences map[string]uint64 // last sequence number per channel
	closed    bool
	done      sync.WaitGroup // the writer goroutine

	published     atomic.Uint64
	noSubscribers atomic.Uint64
	failed        atomic.Uint64
}

// publishCall is one Publish call waiting for the writer.
type publishCall struct {
	ctx     context.Context
	topic   string
	channel string
	msgs    []*message.Message
	bodies  [][]byte
	err     error
	done    chan struct{}
}

// NewPublisher returns a Publisher; logger may be nil.
func NewPublisher(config PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	config.setDefaults()
	if err := config.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		config:    config,
		id:        watermill.NewShortUUID(),
		sequences: make(map[string]uint64),
	}
	p.logger = logger.With(watermill.LogFields{"component": "redispubsub.Publisher", "publisher_id": p.id})
	p.wake = sync.NewCond(&p.mu)
	p.done.Add(1)
	go p.write()
	return p, nil
}

// Publish sends msgs to the channel ChannelPrefix+topic, in order, and
// returns after Redis answered for every one of them. All messages are
// encoded before anything is sent: an encoding error sends nothing. Publish
// returns early with the context's error when the context of any message
// ends first; messages already on the wire may still arrive. A nil error
// means Redis accepted every message; it does not mean anyone was subscribed
// (Redis Pub/Sub keeps nothing): Stats counts the messages that reached no
// subscriber.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := messagesContext(msgs)
	defer cancel()
	if ctx.Err() != nil {
		p.failed.Add(uint64(len(msgs)))
		return fmt.Errorf("redispubsub: publish to %q: nothing sent: %w", topic, context.Cause(ctx))
	}
	call := &publishCall{
		ctx: ctx, topic: topic, channel: p.config.ChannelPrefix + topic, msgs: msgs,
		done: make(chan struct{}),
	}
	sendHere, err := p.enqueue(call)
	if err != nil {
		return err
	}
	if sendHere {
		p.sendInline()
		return call.err
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("redispubsub: publish to %q: %w", topic, context.Cause(ctx))
	}
}

// enqueue stamps and encodes the messages of call and queues it. Both happen
// under mu, so that sequence numbers follow the wire order. It reports
// whether the caller is to send the queue itself: when nothing is being
// sent and the call cannot be cancelled (a caller that can must be able to
// return while its pipeline waits for Redis), sending from the calling
// goroutine saves two goroutine switches.
func (p *Publisher) enqueue(call *publishCall) (sendHere bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, ErrPublisherClosed
	}
	seq := p.sequence(call.channel)
	call.bodies = make([][]byte, len(call.msgs))
	for i, msg := range call.msgs {
		var st *stamp
		if !p.config.DisableSequenceNumbers {
			seq++
			st = &stamp{publisher: p.id, seq: seq}
		}
		body, err := marshal(p.config.Marshaler, call.topic, msg, st)
		if err != nil {
			return false, fmt.Errorf("redispubsub: cannot marshal message %s for topic %q: %w", msg.UUID, call.topic, err)
		}
		call.bodies[i] = body
	}
	if !p.config.DisableSequenceNumbers {
		p.sequences[call.channel] = seq
	}
	p.pending = append(p.pending, call)
	if !p.sending && len(p.pending) == 1 && call.ctx.Done() == nil {
		p.sending = true
		return true, nil
	}
	p.wake.Signal()
	return false, nil
}

// sendInline sends the queue from the calling goroutine, which enqueue made
// the sender, then leaves whatever was queued meanwhile to the writer.
func (p *Publisher) sendInline() {
	p.mu.Lock()
	batch := p.takeBatch()
	p.mu.Unlock()
	p.send(batch)
	p.mu.Lock()
	p.sending = false
	p.wake.Signal() // the writer: for what was queued meanwhile, or to see Close
	p.mu.Unlock()
}

// maxTrackedChannels bounds the sequence numbers a Publisher remembers.
const maxTrackedChannels = 4096

// sequence returns the last sequence number used on channel. When a new
// channel would exceed maxTrackedChannels, the Publisher forgets every
// channel and takes a new id: Subscribers see new streams, which start
// without a gap, rather than numbers that start again. Called with mu held.
func (p *Publisher) sequence(channel string) uint64 {
	seq, ok := p.sequences[channel]
	if !ok && len(p.sequences) >= maxTrackedChannels {
		p.sequences = make(map[string]uint64)
		p.id = watermill.NewShortUUID()
		p.logger.Debug("Sequence numbers restarted under a new publisher id", watermill.LogFields{"new_publisher_id": p.id})
	}
	return seq
}

// maxBatchMessages bounds the messages of one pipeline.
const maxBatchMessages = 1024

// write sends the pending calls, batch after batch, until Close.
func (p *Publisher) write() {
	defer p.done.Done()
	for {
		batch := p.nextBatch()
		if batch == nil {
			return
		}
		p.send(batch)
		p.mu.Lock()
		p.sending = false
		p.mu.Unlock()
	}
}

// nextBatch waits for pending calls and takes whole calls up to
// maxBatchMessages (at least one). It returns nil once closed and drained.
func (p *Publisher) nextBatch() []*publishCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.pending) == 0 || p.sending {
		if p.closed && len(p.pending) == 0 && !p.sending {
			return nil
		}
		p.wake.Wait()
	}
	p.sending = true
	return p.takeBatch()
}

// takeBatch takes whole calls from the queue, up to maxBatchMessages (at
// least one). Called with mu held.
func (p *Publisher) takeBatch() []*publishCall {
	n, count := 0, 0
	for n < len(p.pending) && (n == 0 || count+len(p.pending[n].msgs) <= maxBatchMessages) {
		count += len(p.pending[n].msgs)
		n++
	}
	batch := slices.Clone(p.pending[:n])
	p.pending = slices.Delete(p.pending, 0, n)
	return batch
}

// send publishes a batch in one pipeline and answers every call. Calls whose
// context ended while they waited are not sent.
func (p *Publisher) send(batch []*publishCall) {
	live := batch[:0]
	for _, call := range batch {
		if call.ctx.Err() != nil {
			call.finish(p, nil, context.Cause(call.ctx))
			continue
		}
		live = append(live, call)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	cmds := make([][]*redis.IntCmd, len(live))
	_, err := p.config.Client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, call := range live {
			cmds[i] = make([]*redis.IntCmd, len(call.bodies))
			for j, body := range call.bodies {
				cmd := pipe.Publish(call.ctx, call.channel, body)
				// PUBLISH has no key, so a ClusterClient would send each one
				// to a random node, and messages would overtake each other
				// on their way through the cluster bus. Hashing the channel
				// as a key sends a channel's messages through one node.
				cmd.SetFirstKeyPos(1)
				cmds[i][j] = cmd
			}
		}
		return nil
	})
	for i, call := range live {
		call.finish(p, cmds[i], err)
	}
}

// finish counts the replies of one call and wakes its caller with an error
// naming how many messages failed.
func (call *publishCall) finish(p *Publisher, cmds []*redis.IntCmd, pipeErr error) {
	defer close(call.done)
	if cmds == nil {
		p.failed.Add(uint64(len(call.msgs)))
		call.err = fmt.Errorf("redispubsub: publish to %q: nothing sent: %w", call.topic, pipeErr)
		return
	}
	var failed int
	var firstErr error
	for i, cmd := range cmds {
		receivers, err := cmd.Result()
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			p.logger.Error("Publish failed", err, watermill.LogFields{"topic": call.topic, "message_uuid": call.msgs[i].UUID})
			continue
		}
		p.published.Add(1)
		if receivers == 0 {
			p.noSubscribers.Add(1)
		}
	}
	if failed > 0 {
		p.failed.Add(uint64(failed))
		call.err = fmt.Errorf("redispubsub: publish to %q: %d of %d messages not sent: %w",
			call.topic, failed, len(call.msgs), firstErr)
	}
}

// batchContext returns the context of a pipeline: it ends when no caller
// waits for it any more, and has the latest deadline of its calls, if they
// all have one. (go-redis applies both to the socket only with
// ContextTimeoutEnabled; a stuck pipeline would otherwise hold up every
// later one for the client's ReadTimeout.)
func batchContext(calls []*publishCall) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, call := range calls {
		deadline, ok := call.ctx.Deadline()
		if !ok || call.ctx.Done() == nil {
			// This caller may wait for ever: so may the pipeline.
			return context.Background(), func() {}
		}
		if deadline.After(latest) {
			latest = deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), latest)
	var waiting atomic.Int64
	waiting.Store(int64(len(calls)))
	stops := make([]func() bool, len(calls))
	for i, call := range calls {
		stops[i] = context.AfterFunc(call.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// messagesContext returns a context that is done as soon as the context of
// any of msgs is done.
func messagesContext(msgs []*message.Message) (context.Context, context.CancelFunc) {
	first := msgs[0].Context()
	if len(msgs) == 1 {
		return first, func() {}
	}
	ctx, cancel := context.WithCancelCause(first)
	stops := make([]func() bool, 0, len(msgs)-1)
	for _, msg := range msgs[1:] {
		mctx := msg.Context()
		if mctx == first || mctx.Done() == nil {
			continue
		}
		if mctx.Err() != nil {
			cancel(context.Cause(mctx)) // now, not in AfterFunc's goroutine
		}
		stops = append(stops, context.AfterFunc(mctx, func() { cancel(context.Cause(mctx)) }))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}

// Close stops accepting messages: Publish then returns ErrPublisherClosed.
// It waits until the calls already accepted have been answered. Close is
// idempotent and never closes PublisherConfig.Client.
func (p *Publisher) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.wake.Broadcast()
	p.mu.Unlock()
	p.done.Wait()
	if !already {
		p.logger.Debug("Publisher closed", nil)
	}
	return nil
}

// Stats returns the Publisher's counters since it was made.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Published:     p.published.Load(),
		NoSubscribers: p.noSubscribers.Load(),
		Failed:        p.failed.Load(),
	}
}
