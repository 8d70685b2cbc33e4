package redispubsub

// The send path of the Publisher, in the order a message takes it:
//
//   - publish: the call's context; with a history, encodeWithHistory
//     encodes the messages and their records off the lock; then enqueue;
//   - enqueue (under Publisher.mu): stamp and encode every message, or
//     number those encoded with a history (encode, sequence), then append
//     the call to the queue of its node (nodeOf, queueFor);
//   - the queue is sent batch after batch, one batch on the wire at a time:
//     by the calling goroutine when the queue was idle (sendInline), else by
//     the queue's writer goroutine (write, nextBatch); takeBatch coalesces
//     the waiting calls;
//   - send: one PUBLISH via Client.Process for a single message, a pipeline
//     for more (publishCommand, batchContext);
//   - finish answers each call, and sent lets the next batch go.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// publishCall is one Publish call waiting for the writer.
type publishCall struct {
	ctx     context.Context
	topic   string
	channel string
	msgs    []*message.Message
	bodies  [][]byte
	// history: the keys of the channel's history, the Publisher's id, the
	// epoch the bodies carry, where the script writes each body's offset,
	// and each message's record.
	historyKeys [2]string
	publisher   string
	epoch       string
	marks       []historyMarks
	records     [][]byte
	err         error
	done        chan struct{}
}

// publish is Publish: it queues one call and waits for its answer.
func (p *Publisher) publish(topic string, msgs []*message.Message) error {
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
	if p.config.History.enabled() {
		if err := p.encodeWithHistory(call); err != nil {
			p.failed.Add(uint64(len(msgs)))
			return err
		}
	}
	q, sendHere, err := p.enqueue(call, p.nodeOf(ctx, call.channel))
	if err != nil {
		p.failed.Add(uint64(len(msgs)))
		return err
	}
	if sendHere {
		p.sendInline(q)
		return call.err
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("redispubsub: publish to %q: %w", topic, context.Cause(ctx))
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

// nodeOf returns the address of the node that owns channel's hash slot in
// sharded mode on a cluster, as go-redis's slot map says; "" otherwise, and
// when the slot map cannot be had (the pipeline then reports go-redis's
// error). It only groups pipelines: go-redis routes each command itself and
// follows MOVED.
func (p *Publisher) nodeOf(ctx context.Context, channel string) string {
	if p.cluster == nil {
		return ""
	}
	master, err := p.cluster.MasterForKey(ctx, channel)
	if err != nil {
		return ""
	}
	return master.Options().Addr
}

// enqueue stamps and encodes the messages of call (with a history, numbers
// those encodeWithHistory encoded) and queues it for node, or for the node
// its channel stays with. Both happen under mu, so that sequence numbers
// follow the wire order. It reports whether the caller is
// to send the queue itself: when nothing is being sent to the node and the
// call cannot be cancelled (a caller that can must be able to return while
// its pipeline waits for Redis), sending from the calling goroutine saves
// two goroutine switches.
func (p *Publisher) enqueue(call *publishCall, node string) (q *nodeQueue, sendHere bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, ErrPublisherClosed
	}
	history := p.config.History.enabled()
	if !history {
		if err := p.encode(call); err != nil {
			return nil, false, err
		}
	}
	q = p.queueFor(call.channel, node)
	if history {
		p.number(call, q.lane) // encodeWithHistory encoded them
	}
	q.pending = append(q.pending, call)
	if !q.sending && len(q.pending) == 1 && call.ctx.Done() == nil {
		q.sending = true
		return q, true, nil
	}
	q.wake.Signal()
	return q, false, nil
}

// encode stamps and encodes every message of call, bound for a channel
// without a history, into call.bodies, or returns why one of them cannot
// be sent. Called with mu held.
func (p *Publisher) encode(call *publishCall) error {
	stream := p.sequence(call.channel)
	if stream.last == 0 {
		stream.since = time.Now().UnixMilli()
	}
	call.bodies = make([][]byte, len(call.msgs))
	sum := channelChecksum(call.channel)
	for i, msg := range call.msgs {
		var st *stamp
		if !p.config.DisableSequenceNumbers {
			stream.last++
			st = &stamp{publisher: p.id, seq: stream.last, since: stream.since, channel: sum, scoped: true}
		}
		body, err := p.marshalBody(call, msg, st)
		if err != nil {
			return err
		}
		call.bodies[i] = body
	}
	if !p.config.DisableSequenceNumbers {
		p.sequences[call.channel] = stream
	}
	return nil
}

// encodeWithHistory encodes every message of call, bound for its channel's
// history, into call.bodies and call.records, off the Publisher's lock
// (encode numbers them under it): the offset numbers each message, one
// sequence for every Publisher, so a body carries no number of this
// Publisher; it carries the epoch the Publisher last heard of the history,
// which the script replaces when the history's differs (see
// historyScript).
func (p *Publisher) encodeWithHistory(call *publishCall) error {
	hist, meta, err := historyKeys(call.channel)
	if err != nil {
		return fmt.Errorf("redispubsub: publish to %q with a history: %w", call.topic, err)
	}
	call.historyKeys = [2]string{hist, meta}
	call.epoch = p.heardEpoch(call.channel)
	call.bodies = make([][]byte, len(call.msgs))
	call.marks = make([]historyMarks, len(call.msgs))
	call.records = make([][]byte, len(call.msgs))
	mark := epochMark(call.epoch)
	for i, msg := range call.msgs {
		form := envelopePayloadForm(msg.Payload) // for the envelope and the record
		body, err := p.marshalBody(call, msg, &stamp{history: true, epoch: call.epoch, form: form, formKnown: true})
		if err != nil {
			return err
		}
		offset, ok := offsetMark(body, mark)
		if !ok {
			return fmt.Errorf("redispubsub: message %s for topic %q: the envelope has no room for its position", msg.UUID, call.topic)
		}
		call.bodies[i] = body
		call.marks[i].offset = offset
		call.records[i] = appendRecord(make([]byte, 0, len(body)), msg, form)
	}
	return nil
}

// number gives the messages of call, encoded for the history and bound for
// the queue of lane, the lane's numbers on the channel: the script runs each
// number once (see historyScript), so each lane numbers its own, under an
// id of its own, in the order its pipelines go on the wire. Called with mu
// held.
func (p *Publisher) number(call *publishCall, lane int) {
	stream := p.sequence(call.channel)
	call.publisher = p.laneID(lane)
	for i := range call.marks {
		stream.lanes[lane]++
		call.marks[i].seq = stream.lanes[lane]
	}
	p.sequences[call.channel] = stream
}

// laneID is the id under which lane's runs of the history script are run
// once: the Publisher's id, and the lane after it but for the first.
func (p *Publisher) laneID(lane int) string {
	if lane == 0 {
		return p.id
	}
	return p.id + "." + strconv.Itoa(lane)
}

// heardEpoch returns the epoch of channel's history that the script last
// answered, or, not heard of yet, a fresh one that no history has, which
// the script replaces.
func (p *Publisher) heardEpoch(channel string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	stream := p.sequence(channel)
	if stream.epoch == "" {
		stream.epoch = newEpoch()
		p.sequences[channel] = stream
	}
	return stream.epoch
}

// marshalBody marshals msg of call with st, within MaxMessageBytes.
func (p *Publisher) marshalBody(call *publishCall, msg *message.Message, st *stamp) ([]byte, error) {
	body, err := marshal(p.config.Marshaler, call.topic, msg, st)
	if err != nil {
		return nil, fmt.Errorf("redispubsub: cannot marshal message %s for topic %q: %w", msg.UUID, call.topic, err)
	}
	if limit := p.config.MaxMessageBytes; limit > 0 && len(body) > limit {
		return nil, fmt.Errorf("%w: message %s for topic %q is %d bytes encoded, MaxMessageBytes is %d; nothing of the call was sent",
			ErrMessageTooLarge, msg.UUID, call.topic, len(body), limit)
	}
	return body, nil
}

// channelStream is a Publisher's sequence on one channel: the last number
// used, and when number 1 was (MetadataSince); with History, the epoch of
// the channel's history that the script last answered, and the last number
// each lane gave (see number).
type channelStream struct {
	last  uint64
	since int64
	epoch string
	lanes [historyLanes]uint64
}

// maxTrackedChannels bounds the sequence numbers a Publisher remembers.
const maxTrackedChannels = 4096

// sequence returns the last sequence number used on channel. When a new
// channel would exceed maxTrackedChannels, the Publisher forgets every
// channel and takes a new id: Subscribers see new streams, which start
// without a gap, rather than numbers that start again. Called with mu held.
func (p *Publisher) sequence(channel string) channelStream {
	seq, ok := p.sequences[channel]
	if !ok && len(p.sequences) >= maxTrackedChannels {
		p.sequences = make(map[string]channelStream)
		p.id = watermill.NewShortUUID()
		p.logger.Debug("Sequence numbers restarted under a new publisher id", watermill.LogFields{"new_publisher_id": p.id})
	}
	return seq
}

// nodeQueue holds the Publish calls bound for one node, or for all of Redis
// when the Publisher does not publish per node, in one lane. One pipeline of
// a queue is on the wire at a time, to keep the order of its calls; a
// writer goroutine per queue sends them, batch after batch, until Close. A
// queue lives until Close: one per node address the Publisher has sent to
// and lane, a handful even after failovers. The fields are guarded by
// Publisher.mu.
//
// Without a history a node has one lane: its sequence numbers follow the
// wire order. With a history it has historyLanes: the script spends Redis
// several microseconds per message, so one pipeline on the wire at a time
// leaves Redis and the Publisher waiting for each other by turns; two keep
// both busy. A call goes to a lane that sends nothing, else to the one with
// the fewest calls: calls that run at once may reach Redis in either order,
// and a call still reaches it after every call that returned before it
// began.
type nodeQueue struct {
	node    string
	lane    int
	pending []*publishCall
	sending bool       // a batch is on the wire: the next waits, to keep the order
	wake    *sync.Cond // on Publisher.mu: signalled when pending grows or the Publisher closes
}

// historyLanes is how many lanes a node has with a history (see
// nodeQueue).
const historyLanes = 2

// queueKey names a queue: its node and lane.
type queueKey struct {
	node string
	lane int
}

// channelRoute binds a channel to the queues of one node while calls of the
// channel are queued or on the wire.
type channelRoute struct {
	node  string
	calls int
}

// queueFor returns the queue for a call to channel that nodeOf sent to node,
// making it and its writer if needed: a queue of the node that the channel
// stays with, if it has calls queued or on the wire, so that they keep their
// order even when the slot changed owner meanwhile; of its lanes, one that
// sends nothing, else the one with the fewest calls. Called with mu held.
func (p *Publisher) queueFor(channel, node string) *nodeQueue {
	if p.routes != nil {
		route := p.routes[channel]
		if route == nil {
			route = &channelRoute{node: node}
			p.routes[channel] = route
		}
		route.calls++
		node = route.node
	}
	lanes := 1
	if p.config.History.enabled() {
		lanes = historyLanes
	}
	best := p.queue(queueKey{node, 0})
	for lane := 1; lane < lanes && best.calls() > 0; lane++ {
		if q := p.queue(queueKey{node, lane}); q.calls() < best.calls() {
			best = q
		}
	}
	return best
}

// queue returns the queue key names, making it and its writer if needed.
// Called with mu held.
func (p *Publisher) queue(key queueKey) *nodeQueue {
	q := p.queues[key]
	if q == nil {
		q = &nodeQueue{node: key.node, lane: key.lane, wake: sync.NewCond(&p.mu)}
		p.queues[key] = q
		p.done.Add(1)
		go p.write(q)
	}
	return q
}

// calls returns how many calls q holds, the batch on the wire counting as
// one. Called with Publisher.mu held.
func (q *nodeQueue) calls() int {
	n := len(q.pending)
	if q.sending {
		n++
	}
	return n
}

// sendInline sends q from the calling goroutine, which enqueue made its
// sender, then leaves whatever was queued meanwhile to q's writer.
func (p *Publisher) sendInline(q *nodeQueue) {
	p.mu.Lock()
	batch := q.takeBatch()
	p.mu.Unlock()
	p.send(batch)
	p.mu.Lock()
	p.sent(q, batch)
	p.mu.Unlock()
}

// write sends the pending calls of q, batch after batch, until Close.
func (p *Publisher) write(q *nodeQueue) {
	defer p.done.Done()
	for {
		batch := p.nextBatch(q)
		if batch == nil {
			return
		}
		p.send(batch)
		p.mu.Lock()
		p.sent(q, batch)
		p.mu.Unlock()
	}
}

// nextBatch waits for pending calls of q and takes a batch of them. It
// returns nil once the Publisher is closed and q is drained.
func (p *Publisher) nextBatch(q *nodeQueue) []*publishCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(q.pending) == 0 || q.sending {
		if p.closed && len(q.pending) == 0 && !q.sending {
			return nil
		}
		q.wake.Wait()
	}
	q.sending = true
	return q.takeBatch()
}

// maxBatchMessages bounds the messages of one pipeline.
const maxBatchMessages = 1024

// takeBatch takes whole calls from the queue, up to maxBatchMessages (at
// least one). Called with Publisher.mu held.
func (q *nodeQueue) takeBatch() []*publishCall {
	n, count := 0, 0
	for n < len(q.pending) && (n == 0 || count+len(q.pending[n].msgs) <= maxBatchMessages) {
		count += len(q.pending[n].msgs)
		n++
	}
	batch := slices.Clone(q.pending[:n])
	q.pending = slices.Delete(q.pending, 0, n)
	return batch
}

// send publishes a batch, a single message with one command and more in one
// pipeline, and answers every call. Calls whose context ended while they
// waited are not sent.
func (p *Publisher) send(batch []*publishCall) {
	live := make([]*publishCall, 0, len(batch)) // batch stays whole for sent
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
	if p.config.History.enabled() {
		p.sendWithHistory(ctx, live)
		return
	}
	cmds := make([]*redis.IntCmd, 0, len(live))
	for _, call := range live {
		for _, body := range call.bodies {
			cmds = append(cmds, p.publishCommand(call.ctx, call.channel, body))
		}
	}
	err := process(ctx, p.config.Client, cmds)
	for _, call := range live {
		replies := make([]publishReply, len(call.bodies))
		for j := range replies {
			replies[j].receivers, replies[j].err = cmds[0].Result()
			cmds = cmds[1:]
		}
		call.finish(p, replies, err)
	}
}

// process sends cmds, one as a plain command (it costs less than a
// pipeline of one), more in a pipeline.
func process[C redis.Cmder](ctx context.Context, client redis.UniversalClient, cmds []C) error {
	if len(cmds) == 1 {
		return client.Process(ctx, cmds[0])
	}
	_, err := client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, cmd := range cmds {
			_ = pipe.Process(ctx, cmd)
		}
		return nil
	})
	return err
}

// sendWithHistory sends calls whose messages go to their channels'
// histories: one run of historyScript per channel, Publisher id and epoch
// carried, of up to maxScriptMessages messages each, in one pipeline.
func (p *Publisher) sendWithHistory(ctx context.Context, calls []*publishCall) {
	// A run takes the messages of one channel and lane that carry one
	// epoch. The runs of a channel and lane stay in the order of their
	// numbers: the script refuses a run numbered below one it ran, so a
	// call whose epoch differs from its neighbours' (encoded before an
	// answer told the Publisher another) starts a run of its own rather
	// than join an earlier one of its epoch.
	var runs [][]historyMessage
	filling := make(map[runKey]int) // the run of a channel and lane that takes its next message
	for _, call := range calls {
		key := runKey{call.channel, call.publisher}
		for j := range call.msgs {
			i, ok := filling[key]
			if !ok || len(runs[i]) == maxScriptMessages || runs[i][0].call.epoch != call.epoch {
				i = len(runs)
				runs = append(runs, nil)
				filling[key] = i
			}
			runs[i] = append(runs[i], historyMessage{call, j})
		}
	}
	cmds := make([]*redis.SliceCmd, len(runs))
	for i, run := range runs {
		cmds[i] = p.historyCommand(ctx, run[0].call.epoch, run)
	}
	err := process(ctx, p.config.Client, cmds)
	p.retryNoScript(ctx, cmds, runs)
	replies := make(map[*publishCall][]publishReply, len(calls))
	for _, call := range calls {
		replies[call] = make([]publishReply, len(call.msgs))
	}
	epochs := make(map[string]string) // channel: the epoch its history answered
	for i, run := range runs {
		epoch, receivers, runErr := historyReply(cmds[i], len(run))
		if runErr == nil {
			epochs[run[0].call.channel] = epoch
		}
		for k, m := range run {
			reply := &replies[m.call][m.index]
			switch {
			case runErr != nil:
				reply.err = runErr
			case receivers == nil:
				reply.receivers = -1 // sent already, by a pipeline go-redis sent again
			default:
				reply.receivers = receivers[k]
			}
		}
	}
	p.heardEpochs(epochs)
	for _, call := range calls {
		call.finish(p, replies[call], err)
	}
}

// historyReply returns what a run of historyScript of n messages
// answered: the history's epoch and the receivers of each message (nil:
// the run ran already).
func historyReply(cmd *redis.SliceCmd, n int) (epoch string, receivers []int64, err error) {
	values, err := cmd.Result()
	if err != nil {
		return "", nil, err
	}
	epoch, ok := values[0].(string)
	if !ok || (len(values) != 1 && len(values) != n+1) {
		return "", nil, fmt.Errorf("redispubsub: the history script answered %d values for %d messages", len(values), n)
	}
	if len(values) == 1 {
		return epoch, nil, nil
	}
	receivers = make([]int64, n)
	for k, v := range values[1:] {
		receivers[k], _ = v.(int64)
	}
	return epoch, receivers, nil
}

// heardEpochs keeps the epochs that channels' histories answered, for the
// bodies encoded next.
func (p *Publisher) heardEpochs(epochs map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for channel, epoch := range epochs {
		if stream, ok := p.sequences[channel]; ok && stream.epoch != epoch {
			stream.epoch = epoch
			p.sequences[channel] = stream
		}
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

// publishCommand returns the PUBLISH (or, sharded, SPUBLISH) of body on
// channel. PUBLISH has no key, so a ClusterClient would send each one to a
// random node, and messages would overtake each other on their way through
// the cluster bus. Hashing the channel as a key sends a channel's messages
// through one node: for SPUBLISH the node that owns the channel's slot, the
// one that accepts it (go-redis would find position 1 by itself from
// COMMAND INFO; saying it spares the lookup).
func (p *Publisher) publishCommand(ctx context.Context, channel string, body []byte) *redis.IntCmd {
	name := "publish"
	if p.config.Sharded {
		name = "spublish"
	}
	cmd := redis.NewIntCmd(ctx, name, channel, body)
	cmd.SetFirstKeyPos(1)
	return cmd
}

// publishReply is what Redis answered for one message: the number of
// receivers, or why it was not published.
type publishReply struct {
	receivers int64
	err       error
}

// finish counts the replies of one call (nil: nothing was sent, for
// pipeErr) and wakes its caller with an error naming how many messages
// failed.
func (call *publishCall) finish(p *Publisher, replies []publishReply, pipeErr error) {
	defer close(call.done)
	if replies == nil {
		p.failed.Add(uint64(len(call.msgs)))
		call.err = fmt.Errorf("redispubsub: publish to %q: nothing sent: %w", call.topic, pipeErr)
		return
	}
	var failed int
	var firstErr error
	var firstUUID string
	for i, reply := range replies {
		receivers, err := reply.receivers, reply.err
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr, firstUUID = err, call.msgs[i].UUID
			}
			continue
		}
		p.published.Add(1)
		if receivers == 0 {
			p.noSubscribers.Add(1)
		}
	}
	if failed == 0 {
		return
	}
	p.failed.Add(uint64(failed))
	p.logger.Error("Publish failed", firstErr, watermill.LogFields{
		"topic": call.topic, "failed": failed, "messages": len(call.msgs), "message_uuid": firstUUID,
	})
	if isNoPerm(firstErr) {
		// An ACL refuses a channel, or the command, as a whole: every
		// message of the call was refused, none reached a subscriber.
		call.err = fmt.Errorf("%w to channel %q (%d of %d messages): %w",
			ErrPublishRefused, call.channel, failed, len(call.msgs), firstErr)
		return
	}
	call.err = fmt.Errorf("redispubsub: publish to %q: %d of %d messages not sent: %w",
		call.topic, failed, len(call.msgs), firstErr)
}

// isNoPerm reports whether err is Redis's refusal by an ACL.
func isNoPerm(err error) bool {
	var redisErr redis.Error
	return errors.As(err, &redisErr) && strings.HasPrefix(redisErr.Error(), "NOPERM")
}

// sent ends a batch of q: the next one may go, and the channels of the
// batch need not stay with q any more. Called with mu held.
func (p *Publisher) sent(q *nodeQueue, batch []*publishCall) {
	q.sending = false
	q.wake.Signal() // the writer: for what was queued meanwhile, or to see Close
	if p.routes == nil {
		return
	}
	for _, call := range batch {
		if route := p.routes[call.channel]; route != nil {
			if route.calls--; route.calls == 0 {
				delete(p.routes, call.channel)
			}
		}
	}
}
