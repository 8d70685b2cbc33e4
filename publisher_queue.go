package redispubsub

import (
	"context"
	"slices"
	"sync"
)

// nodeQueue holds the Publish calls bound for one node, or for all of Redis
// when the Publisher does not publish per node. One pipeline of a queue is
// on the wire at a time, to keep the order of its calls; a writer goroutine
// per queue sends them, batch after batch, until Close. A queue lives until
// Close: one per node address the Publisher has sent to, a handful even
// after failovers. The fields are guarded by Publisher.mu.
type nodeQueue struct {
	node    string
	pending []*publishCall
	sending bool       // a batch is on the wire: the next waits, to keep the order
	wake    *sync.Cond // on Publisher.mu: signalled when pending grows or the Publisher closes
}

// channelRoute binds a channel to the queue of one node while calls of the
// channel are queued or on the wire.
type channelRoute struct {
	node  string
	calls int
}

// maxBatchMessages bounds the messages of one pipeline.
const maxBatchMessages = 1024

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

// queueFor returns the queue for a call to channel that nodeOf sent to node,
// making it and its writer if needed: the queue of the node that the channel
// stays with, if it has calls queued or on the wire, so that they keep their
// order even when the slot changed owner meanwhile. Called with mu held.
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
	q := p.queues[node]
	if q == nil {
		q = &nodeQueue{node: node, wake: sync.NewCond(&p.mu)}
		p.queues[node] = q
		p.done.Add(1)
		go p.write(q)
	}
	return q
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
