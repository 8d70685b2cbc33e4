package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/redis/go-redis/v9"
)

// This file recovers what a Subscriber with SubscriberConfig.Recover
// missed on a channel whose messages carry a position (a Publisher with
// History): it remembers, per Redis channel subscription (and per channel
// of a pattern subscription), the last offset routed; after a
// resubscription (a reconnect, a slot move) or an offset that skips, it
// reads the channel's history after that offset and routes what it holds,
// in offset order, before the live messages that arrived meanwhile (held
// while the read runs), dropping those it routed already.

var errUnrecovered = errors.New("messages missed and no longer in the channel's history")

// channelRecovery is what a recovering Subscriber knows of one channel's
// history. Guarded by the mu of the connection that carries the channel.
type channelRecovery struct {
	channel string
	epoch   string // "" until the first message with a position
	last    uint64 // the last offset routed
	// reading is set while a history read runs: live messages wait in
	// held. again asks for one more read once it ends (the channel was
	// resubscribed meanwhile, or a live message was not held); full says
	// that BufferBytes was spent, so that the next read waits a little.
	reading, again, full bool
	held                 []heldMessage
}

// heldMessage is a live message waiting for a history read to end.
type heldMessage struct {
	in  *incoming
	pos Position
}

// moved returns what the channel's next connection starts from: the last
// offset routed; nil when r is. A read under way, and the messages it held,
// stay behind: the next connection reads from the same offset.
func (r *channelRecovery) moved() *channelRecovery {
	if r == nil {
		return nil
	}
	return &channelRecovery{channel: r.channel, epoch: r.epoch, last: r.last}
}

// maxRecoveredChannels bounds the channels of one pattern subscription
// whose histories a Subscriber with Recover follows (about 100 bytes each);
// the messages of channels past it are delivered as they come, neither
// recovered nor checked for gaps.
const maxRecoveredChannels = 4096

// recoveryOf returns what Recover knows of the history of channel on st
// (the channel itself, or a pattern that matches it), making it if needed;
// nil for a pattern's channel past maxRecoveredChannels. Called with mu
// held.
func (c *connection) recoveryOf(st *channelState, channel string) *channelRecovery {
	if !st.pattern {
		if st.recovery == nil {
			st.recovery = &channelRecovery{channel: channel}
		}
		return st.recovery
	}
	r := st.recoveries[channel]
	if r == nil {
		if len(st.recoveries) >= maxRecoveredChannels {
			return nil
		}
		if st.recoveries == nil {
			st.recoveries = make(map[string]*channelRecovery)
		}
		r = &channelRecovery{channel: channel}
		st.recoveries[channel] = r
	}
	return r
}

// recovering reports whether r is still what Recover follows of its
// channel on st, and st still subscribed on this connection. Called with
// mu held.
func (c *connection) recovering(st *channelState, r *channelRecovery) bool {
	if c.table(st.pattern)[st.name] != st {
		return false
	}
	if st.pattern {
		return st.recoveries[r.channel] == r
	}
	return st.recovery == r
}

// byPosition reports whether a message with stp is routed by its
// position: with Recover, or, on a channel subscription, to count gaps by
// its offset (its Publisher stamps no sequence number then; a pattern
// subscription without Recover counts them with its sequence streams).
func (c *connection) byPosition(st *channelState, stp stamp, stamped bool) bool {
	cfg := &c.s.config
	return stamped && stp.position.Offset != 0 && (cfg.Recover || (!st.pattern && !cfg.DisableGapDetection))
}

// routeByPosition routes a live message of st with position pos: at once
// when it follows the last one routed, held while a history read runs,
// dropped when routed already; a skipped offset or another epoch starts a
// read. Called with mu held.
func (c *connection) routeByPosition(st *channelState, in *incoming, pos Position) {
	r := c.recoveryOf(st, in.channel)
	switch {
	case r == nil:
		st.pushAll(in) // past maxRecoveredChannels
	case !c.s.config.Recover:
		c.countByPosition(st, r, in, pos)
	case r.reading:
		c.hold(r, in, pos)
	case r.epoch == "":
		// The first message: nothing before it was missed.
		r.epoch, r.last = strings.Clone(pos.Epoch), pos.Offset
		st.pushAll(in)
	case pos.Epoch == r.epoch && pos.Offset <= r.last:
		c.s.stats.duplicates.Add(1)
		c.logger.Debug("Message routed already dropped", watermill.LogFields{"channel": in.channel, "offset": pos.Offset})
	case pos.Epoch == r.epoch && pos.Offset == r.last+1:
		r.last = pos.Offset
		st.pushAll(in)
	default:
		c.hold(r, in, pos)
		c.startRecovery(st, r)
	}
}

// hold keeps in, a live message of a channel with position pos, until the
// history read under way (r.reading) ends. What is held spends BufferBytes
// as the queues do (and as they do what MaxInFlight carries, it is never
// dropped for them); a message that would exceed it is not held but read
// from the history by one more read, once this one ends (r.again, r.full).
// Called with mu held.
func (c *connection) hold(r *channelRecovery, in *incoming, pos Position) {
	if c.s.budget.over(in.size) {
		r.again, r.full = true, true
		c.logger.Debug("BufferBytes spent during a history read: a live message is left to the next read",
			watermill.LogFields{"channel": in.channel, "offset": pos.Offset})
		return
	}
	c.s.budget.carry(in.size)
	r.held = append(r.held, heldMessage{in, pos})
}

// takeHeld returns what r holds, no longer counted against BufferBytes.
// Called with mu held.
func (c *connection) takeHeld(r *channelRecovery) []heldMessage {
	held := r.held
	r.held = nil
	for _, m := range held {
		c.s.budget.carry(-m.in.size)
	}
	return held
}

// countByPosition routes a live message of st with position pos without
// recovery: an offset that skips is a gap, counted as the sequence stamps'
// are (SubscriberStats.Gaps, OnGap); another epoch, the history lost, may
// hide one (PossibleGaps); an offset routed already is a duplicate, dropped.
// Called with mu held.
func (c *connection) countByPosition(st *channelState, r *channelRecovery, in *incoming, pos Position) {
	topic := strings.TrimPrefix(in.channel, c.s.config.ChannelPrefix)
	switch {
	case r.epoch == "":
	case pos.Epoch != r.epoch:
		c.s.reportGap(GapEvent{Topic: topic, First: r.last + 1, Possible: true})
	case pos.Offset <= r.last:
		c.s.stats.duplicates.Add(1)
		return
	case pos.Offset > r.last+1:
		c.s.reportGap(GapEvent{Topic: topic, First: r.last + 1, Last: pos.Offset - 1})
	}
	if pos.Epoch != r.epoch {
		r.epoch = strings.Clone(pos.Epoch)
	}
	r.last = pos.Offset
	st.pushAll(in)
}

// resubscribedChannel is the connection's resubscribe-confirmed event for
// st (after a reconnect, or a slot move): Redis delivered nothing of it
// meanwhile, so the history is read from the last offset routed, of each
// channel a pattern has seen. Called with mu held.
func (c *connection) resubscribedChannel(st *channelState) {
	if !c.s.config.Recover {
		return
	}
	if r := st.recovery; r != nil && r.epoch != "" {
		c.startRecovery(st, r)
	}
	for _, r := range st.recoveries {
		if r.epoch != "" {
			c.startRecovery(st, r)
		}
	}
}

// startRecovery starts a history read for r, of a channel of st, or asks
// the one running for another. Called with mu held.
func (c *connection) startRecovery(st *channelState, r *channelRecovery) {
	if r.reading {
		r.again = true
		return
	}
	r.reading = true
	c.s.wg.Add(1)
	go c.recover(st, r)
}

// recover reads st's history after the last offset routed, routes what it
// holds and what was held meanwhile, and counts what it no longer holds.
// A read that fails is tried again while the channel is subscribed; the
// history's own bound decides what is still there.
func (c *connection) recover(st *channelState, r *channelRecovery) {
	defer c.s.wg.Done()
	ctx := c.ctx
	backoff := c.s.config.ReconnectBackoffMin
	// What a recovery that ends without routing its held messages
	// (unsubscribed, moved, closed) held is no longer counted. (One that
	// routes them may start another, with r, before this goroutine ends.)
	routed := false
	defer func() {
		if !routed {
			c.mu.Lock()
			c.takeHeld(r)
			c.mu.Unlock()
		}
	}()
	for attempt := 1; ; attempt++ {
		c.mu.Lock()
		after, epoch, current, full := r.last, r.epoch, c.recovering(st, r), r.full
		r.again, r.full = false, false
		c.mu.Unlock()
		if !current {
			return // unsubscribed, or moved: its next subscription reads again
		}
		if full && !c.sleep(c.s.config.ReconnectBackoffMin) {
			return // the consumers are behind: let them take what is queued first
		}
		select {
		case c.s.historyReads <- struct{}{}:
		case <-ctx.Done():
			return
		}
		h, err := readHistory(ctx, c.s.config.Client, r.channel, after, epoch)
		<-c.s.historyReads
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoPerm(err) || attempt == maxHistoryReads {
				c.logger.Error("Cannot read the channel's history; giving up", err, watermill.LogFields{"channel": r.channel, "attempts": attempt})
				routed = c.giveUp(st, r)
				return
			}
			c.logger.Error("Cannot read the channel's history; trying again", err, watermill.LogFields{"channel": r.channel})
			if !c.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, c.s.config.ReconnectBackoffMax)
			continue
		}
		c.mu.Lock()
		if !c.recovering(st, r) {
			c.mu.Unlock()
			return
		}
		if c.applyHistory(st, r, h) && !r.again {
			held := c.takeHeld(r)
			r.reading, routed = false, true
			for _, m := range held {
				c.routeByPosition(st, m.in, m.pos)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// maxHistoryReads bounds the attempts to read a history: the live messages
// wait meanwhile.
const maxHistoryReads = 5

// maxHistoryReadsAtOnce bounds the history reads of a Subscriber under way
// at once: go-redis's pool has 10 connections per CPU by default.
const maxHistoryReadsAtOnce = 8

// giveUp ends a recovery whose history cannot be read (an ACL refuses it,
// or Redis does not answer): what was missed before the first message held
// is counted as unrecovered, when known, and the held messages are routed,
// the first of them as a new start. It reports false when st has no
// recovery r any more (nothing routed).
func (c *connection) giveUp(st *channelState, r *channelRecovery) (routed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recovering(st, r) {
		return false
	}
	held := c.takeHeld(r)
	if len(held) > 0 && held[0].pos.Epoch == r.epoch && held[0].pos.Offset > r.last+1 {
		c.s.reportUnrecovered(GapEvent{Topic: strings.TrimPrefix(r.channel, c.s.config.ChannelPrefix),
			First: r.last + 1, Last: held[0].pos.Offset - 1, Unrecovered: true})
	}
	r.reading, r.again, r.epoch = false, false, ""
	for _, m := range held {
		c.routeByPosition(st, m.in, m.pos)
	}
	return true
}

// applyHistory routes what h holds after r.last and counts what it does not
// hold. It reports false when h is of another epoch than r: the history was
// lost since, the loss is reported, and the new history is to be read from
// its start. Called with mu held.
func (c *connection) applyHistory(st *channelState, r *channelRecovery, h historyRead) (done bool) {
	topic := strings.TrimPrefix(r.channel, c.s.config.ChannelPrefix)
	if h.epoch != r.epoch {
		c.s.reportUnrecovered(GapEvent{Topic: topic, First: r.last + 1, Unrecovered: true, HistoryLost: true})
		r.epoch, r.last = h.epoch, 0
		if h.epoch == "" {
			// No history at all now: the held messages start a new one.
			return true
		}
		return false
	}
	c.dropCovered(r, h)
	next := r.last + 1
	for _, e := range h.entries {
		if e.offset < next {
			continue
		}
		if e.offset > next {
			c.s.reportUnrecovered(GapEvent{Topic: topic, First: next, Last: e.offset - 1, Unrecovered: true})
		}
		c.s.stats.recovered.Add(1)                             // before a consumer can have it
		st.pushAll(e.incoming(r.channel, st.pattern, h.epoch)) // decoded by the subscription that takes it, off the lock
		next = e.offset + 1
	}
	if h.top >= next && len(h.entries) == 0 {
		// Given, and gone: the history was trimmed (or its stream lost
		// while its offsets went on).
		c.s.reportUnrecovered(GapEvent{Topic: topic, First: next, Last: h.top, Unrecovered: true})
		next = h.top + 1
	}
	r.last = next - 1
	return true
}

// dropCovered drops the held messages that h, read after them, holds too:
// they are routed from h, and their live copies would be dropped as
// duplicates once h is; dropped first, they do not spend BufferBytes that
// h's messages need. Called with mu held.
func (c *connection) dropCovered(r *channelRecovery, h historyRead) {
	if len(h.entries) == 0 {
		return
	}
	first := max(h.entries[0].offset, r.last+1)
	kept := r.held[:0]
	for _, m := range r.held {
		if m.pos.Epoch == h.epoch && m.pos.Offset >= first && m.pos.Offset <= h.top {
			c.s.budget.carry(-m.in.size)
			c.s.stats.duplicates.Add(1)
			continue
		}
		kept = append(kept, m)
	}
	clear(r.held[len(kept):])
	r.held = kept
}

// pushAll queues in for every subscription of st. Called with the
// connection's mu held.
func (st *channelState) pushAll(in *incoming) {
	in.shared = len(st.subs) > 1
	for _, sn := range st.subs {
		sn.push(in)
	}
}

// reportUnrecovered counts, logs and reports messages that a history no
// longer held.
func (s *Subscriber) reportUnrecovered(ev GapEvent) {
	fields := watermill.LogFields{"topic": ev.Topic, "first": ev.First, "last": ev.Last, "missing": ev.Missing()}
	if ev.HistoryLost {
		s.stats.historyLost.Add(1)
		s.logger.Error("Messages perhaps missed: the channel's history was lost (its epoch changed)", errUnrecovered, fields)
	} else {
		s.stats.unrecovered.Add(ev.Missing())
		s.logger.Error("Messages missed and no longer in the channel's history", errUnrecovered, fields)
	}
	if hook := s.config.OnGap; hook != nil {
		s.hooks.call(func() { hook(ev) })
	}
}

// historyRead is what a channel's history holds after an offset.
type historyRead struct {
	epoch   string // "" when the channel has no history
	top     uint64 // the last offset given
	entries []historyEntry
}

// historyEntry is one message of a history: its offset and its record.
type historyEntry struct {
	offset uint64
	record string
}

// readHistory reads the history of channel after the offset after of the
// epoch epoch, through client. An HMGET of the meta hash first gives the
// epoch and the last offset: a history of another epoch is returned without
// its records (the caller reads it again from its start, if at all), else
// the last offset says how many records to ask for. A transaction (MULTI,
// HMGET, LRANGE of the end of the list, EXEC) then reads the epoch, the
// last offset and the last records atomically, so that the records'
// offsets follow from the end. Records published in between push the
// wanted ones further back: then the read is done again, asking for more.
// (A script could do it in one step, but Redis takes about 8 times as long
// to hand 10,000 records through Lua.)
func readHistory(ctx context.Context, client redis.UniversalClient, channel string, after uint64, epoch string) (historyRead, error) {
	list, meta, err := historyKeys(channel)
	if err != nil {
		return historyRead{}, err
	}
	fail := func(err error) (historyRead, error) {
		return historyRead{}, fmt.Errorf("redispubsub: read the history of %q: %w", channel, err)
	}
	first, err := metaOf(client.HMGet(ctx, meta, "e", "s"), channel)
	if err != nil || first.epoch == "" || first.epoch != epoch || first.top <= after {
		// Nothing to read: what is published from now on arrives live
		// (its callers read once the channel is subscribed).
		return first, err
	}
	top := first.top
	for {
		want := int64(0)
		if top > after {
			want = int64(top-after) + int64(top-after)/4 + 16 // room for what is published meanwhile
		}
		var fields *redis.SliceCmd
		var records *redis.StringSliceCmd
		_, err := client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			fields = p.HMGet(ctx, meta, "e", "s")
			if want > 0 {
				records = p.LRange(ctx, list, -want, -1)
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
		h, err := metaOf(fields, channel)
		if err != nil || h.epoch == "" {
			return h, err
		}
		var got []string
		if records != nil {
			got = records.Val()
		}
		if uint64(len(got)) > h.top {
			got = got[uint64(len(got))-h.top:] // not its records: they are not numbered
		}
		if int64(len(got)) == want && h.top-uint64(len(got)) > after {
			top = h.top // published meanwhile: ask for more
			continue
		}
		for i, record := range got {
			if offset := h.top - uint64(len(got)-1-i); offset > after {
				h.entries = append(h.entries, historyEntry{offset: offset, record: record})
			}
		}
		return h, nil
	}
}

// metaOf returns the epoch and the last offset that cmd, an HMGET of a
// history's meta hash "e" and "s", read (none when the channel has no
// history), or cmd's error.
func metaOf(cmd *redis.SliceCmd, channel string) (historyRead, error) {
	values, err := cmd.Result()
	if err != nil {
		return historyRead{}, fmt.Errorf("redispubsub: read the history of %q: %w", channel, err)
	}
	epoch, _ := values[0].(string)
	last, _ := values[1].(string)
	if epoch == "" {
		return historyRead{}, nil
	}
	top, err := strconv.ParseUint(last, 10, 64)
	if err != nil {
		return historyRead{}, fmt.Errorf("redispubsub: the history of %q has a meta hash that it did not write (offset %q)", channel, last)
	}
	return historyRead{epoch: epoch, top: top}, nil
}

// incoming returns e, an entry of the history of channel with epoch, as an
// incoming message (for a pattern subscription, when pattern is set),
// decoded by its decode like a live one.
func (e historyEntry) incoming(channel string, pattern bool, epoch string) *incoming {
	return &incoming{
		channel: channel, pattern: pattern, body: e.record, position: &Position{Offset: e.offset, Epoch: epoch},
		size: int64(len(e.record) + len(channel) + incomingOverhead),
	}
}
