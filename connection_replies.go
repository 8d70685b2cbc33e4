package redispubsub

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// This file handles what the reader reads: messages, confirmations, PONGs
// and error replies. Every handler runs on the reader's goroutine.

// incomingOverhead approximates what a queued message costs beside its body
// and channel: the incoming that wraps them and its queue slot.
const incomingOverhead = 200

// route queues a message for every subscription of its channel or pattern.
// It does not decode: the reader's only work per message is reading it, so
// that it keeps up with Redis whatever the consumers and the Marshaler cost.
func (c *connection) route(f *frame) {
	s := c.s
	s.stats.received.Add(1)
	if f.oversized {
		channel := f.name
		if f.kind == framePMessage {
			channel = f.channel
		}
		s.stats.oversized.Add(1)
		s.logger.Error("Message larger than MaxMessageBytes skipped", errOversized, watermill.LogFields{
			"channel": string(channel), "body_bytes": f.size, "max_message_bytes": s.config.MaxMessageBytes,
		})
		return
	}
	// The stamp is read before the lock: parsing the body is the costly
	// part of the sequence check.
	var stp stamp
	stamped := false
	if s.stamps != nil {
		stp, stamped = s.stamps.stampOf(f.body)
	}
	c.mu.Lock()
	var st *channelState
	if f.kind == framePMessage {
		st = c.patterns[string(f.name)]
	} else {
		st = c.channels[string(f.name)]
	}
	if st == nil {
		c.mu.Unlock()
		return // its last subscription ended; the UNSUBSCRIBE is on its way
	}
	channel := st.name
	if st.pattern {
		channel = string(f.channel)
	}
	if c.byPosition(st, stp, stamped) {
		c.routeByPosition(st, &incoming{
			channel: channel, pattern: st.pattern, body: f.body, size: int64(len(f.body) + len(channel) + incomingOverhead),
		}, stp.position)
		c.mu.Unlock()
		return
	}
	if stamped && !stp.sequenced() && stp.position.Offset != 0 {
		// A history's message on a pattern subscription: its offset is
		// its number in the channel's stream of that epoch.
		stp.publisher, stp.seq = stp.position.Epoch, stp.position.Offset
	}
	// The stream is checked whether or not a subscription takes the
	// message: one may be joining, and it must not see a gap later.
	ev, verdict := c.checkSequence(st, channel, stp, stamped && !s.config.DisableGapDetection)
	// The subscriptions are pushed to outside mu, from a copy: remove
	// edits st.subs in place. One subscription, the common case, needs no
	// slice.
	var one *subscription
	var many []*subscription
	if verdict != duplicate {
		switch len(st.subs) {
		case 0:
		case 1:
			one = st.subs[0]
		default:
			many = slices.Clone(st.subs)
		}
	}
	c.mu.Unlock()
	if one != nil || many != nil {
		in := &incoming{
			channel: channel, pattern: st.pattern, body: f.body, shared: many != nil,
			size: int64(len(f.body) + len(channel) + incomingOverhead),
		}
		if one != nil {
			one.push(in)
		}
		for _, sn := range many {
			sn.push(in)
		}
	}
	switch verdict {
	case gapFound, possibleGap:
		s.reportGap(ev)
	case duplicate:
		s.stats.duplicates.Add(1)
		s.logger.Info("Duplicate message dropped (its publisher's pipeline was retried)", watermill.LogFields{
			"topic": ev.Topic, "publisher": ev.Publisher, "seq": ev.First,
		})
	}
}

// checkSequence takes the sequence stamp stp (when stamped, and made for
// channel) and says whether it is new, a duplicate (its GapEvent's First is
// the duplicate's number) or reveals a gap in what st received. The first
// message of a stream it never saw, after the connection was interrupted,
// reveals that its start was lost when the stream began after the
// subscription (by MetadataSince), or may have been when it began before,
// does not say, or may be a stream the tracker forgot (see
// maxTrackedStreams). Called with mu held.
func (c *connection) checkSequence(st *channelState, channel string, stp stamp, stamped bool) (GapEvent, sequenceVerdict) {
	if !stamped || !stp.sequenced() || (stp.scoped && stp.channel != channelChecksum(channel)) {
		// No stamp, or one made for another channel (a peer relayed the
		// envelope unchanged): it says nothing of this channel's stream.
		return GapEvent{}, inSequence
	}
	if st.sequences == nil {
		st.sequences = newSequenceTracker()
	}
	ev := GapEvent{Topic: strings.TrimPrefix(channel, c.s.config.ChannelPrefix), Publisher: stp.publisher}
	verdict, firstMissing := st.sequences.observe(stp.publisher, channel, stp.seq)
	switch verdict {
	case duplicate:
		ev.First = stp.seq
	case gapFound:
		ev.First, ev.Last = firstMissing, stp.seq-1
	case newStream:
		if stp.seq == 1 || !st.interrupted {
			return ev, inSequence
		}
		ev.First, ev.Last = 1, stp.seq-1
		if stp.since == 0 || stp.since < st.confirmedMs || st.sequences.forgot() {
			ev.Possible = true
			return ev, possibleGap
		}
		return ev, gapFound
	}
	return ev, verdict
}

// confirm matches a (un)subscribe confirmation with the oldest command that
// owes one, and starts the subscriptions waiting for it.
func (c *connection) confirm(sess *session, f *frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sharded := c.s.config.Sharded
	if len(sess.sent) == 0 || !sess.sent[0].answeredBy(f, sharded) {
		if f.kind == frameUnsubscribe && f.sharded && sharded {
			// Redis moved the channel's slot away (or the node was
			// demoted): the channel is to be subscribed at its new owner.
			c.rehome(string(f.name), "Redis ended the subscription (SUNSUBSCRIBE): its slot moved")
			return
		}
		c.fault(sess, fmt.Errorf("%w: %s %q", errUnexpectedReply, f.text, f.name))
		return
	}
	cmd := sess.sent[0]
	i := cmd.replied
	cmd.replied++
	if cmd.replied == len(cmd.names) {
		sess.sent = sess.sent[1:]
	}
	st := c.table(cmd.pattern)[cmd.names[i]]
	if cmd.kind != cmdSubscribe {
		if st != nil {
			// The stream breaks here: what is published until the next
			// SUBSCRIBE is confirmed is not missed, nobody listened.
			st.sequences, st.confirmedMs, st.interrupted, st.recovery, st.recoveries = nil, 0, false, nil, nil
		}
		c.s.connectionIdle(c)
		return
	}
	if st != nil {
		st.refused = nil
		again := st.confirmedMs != 0 // resubscribed: after a reconnect, or moved here
		if !again {
			st.confirmedMs = time.Now().UnixMilli()
		}
		c.start(st, cmd, cmd.starters[i])
		if again {
			c.resubscribedChannel(st)
		}
	} else {
		// The probe channel, or a channel that left meanwhile (moved to
		// another node): the connection may carry nothing now.
		c.probeConfirmed(sess, cmd.names[i], cmd.pattern)
		defer c.s.connectionIdle(c)
	}
	cmd.starters[i] = nil
	if cmd.resub[i] {
		c.resubscribed()
	}
}

// pong starts the subscriptions that waited for the answer to the oldest
// command, a PING.
func (c *connection) pong(sess *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(sess.sent) == 0 || sess.sent[0].kind != cmdPing {
		c.fault(sess, fmt.Errorf("%w: PONG", errUnexpectedReply))
		return
	}
	c.answerPing(sess)
}

// answerPing takes the PING off the commands owing replies, and starts the
// subscriptions that waited for its answer. Called with mu held.
func (c *connection) answerPing(sess *session) {
	cmd := sess.sent[0]
	sess.sent = sess.sent[1:]
	for _, sn := range cmd.joiners {
		switch {
		case sn.phase != phaseWaiting || sn.awaits != cmd:
		case sn.state.refused != nil:
			// It joined a SUBSCRIBE that Redis refused.
			sn.state.waiting--
			sn.phase = phaseEnded
			sn.fail(sn.state.refused)
			if sn.state.members() == 0 && c.table(sn.state.pattern)[sn.state.name] == sn.state {
				delete(c.table(sn.state.pattern), sn.state.name)
			}
		default:
			c.start(sn.state, cmd, []*subscription{sn})
		}
	}
}

// start makes the subscriptions of st that wait for cmd's reply receive its
// messages from now on. Called with mu held.
func (c *connection) start(st *channelState, cmd *command, sns []*subscription) {
	for _, sn := range sns {
		if sn.phase != phaseWaiting || sn.awaits != cmd {
			continue // ended meanwhile, or waits for a later command now
		}
		sn.phase, sn.awaits = phaseActive, nil
		st.waiting--
		st.subs = append(st.subs, sn)
		sn.started()
	}
}

// errorReply handles an error reply, which answers the oldest command in
// place of all its replies. An error answering a PING (an ACL without
// +ping) counts as its answer. A SUBSCRIBE of several channels is sent
// again one channel at a time (Redis refuses the whole command for one
// refused channel); a refused single channel fails its subscriptions,
// wrapping ErrSubscriptionRefused; the other channels go on. In sharded
// mode, MOVED sends the channels to the owner of their slot.
func (c *connection) errorReply(sess *session, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s.config.Sharded && strings.HasPrefix(text, "MOVED ") && !movedAnswers(sess, text) {
		// A MOVED for a slot that the oldest command owing a reply has no
		// channel of answers a SUNSUBSCRIBE taken as confirmed already:
		// deleting the slot, Redis pushed "sunsubscribe" for its channels,
		// then refused the SUNSUBSCRIBE in flight with MOVED.
		c.logger.Debug("MOVED answering a SUNSUBSCRIBE that Redis confirmed by deleting the slot", watermill.LogFields{"reply": text})
		return
	}
	if len(sess.sent) == 0 || sess.sent[0].replied > 0 {
		c.fault(sess, fmt.Errorf("%w: error %q", errUnexpectedReply, text))
		return
	}
	cmd := sess.sent[0]
	if cmd.kind == cmdPing {
		// Said once per connection: the connection works without PING
		// (an error reply proves life and orders replies as a PONG does).
		if !c.pingRefused {
			c.pingRefused = true
			c.logger.Info("Redis refused PING; its error replies serve the health check instead", watermill.LogFields{"reply": text})
		}
		c.answerPing(sess)
		return
	}
	sess.sent = sess.sent[1:]
	err := redisError(text)
	if cmd.kind == cmdUnsubscribe {
		c.logger.Error("Redis refused an UNSUBSCRIBE", err, watermill.LogFields{"channels": strings.Join(cmd.names, " ")})
		return
	}
	if c.s.config.Sharded && strings.HasPrefix(text, "MOVED ") {
		for i, name := range cmd.names {
			restart(cmd.starters[i])
			c.probeMoved(sess, name, cmd.pattern)
			c.rehome(name, text)
			if cmd.resub[i] {
				c.resubscribed()
			}
		}
		return
	}
	p := &sess.pending
	for i, name := range cmd.names {
		key := redisKey{name, cmd.pattern}
		st := c.table(cmd.pattern)[name]
		if len(cmd.names) > 1 {
			// Again, alone. Those that joined it with a PING start with
			// the new SUBSCRIBE too: the PONG comes before it.
			restart(cmd.starters[i])
			if st != nil {
				c.restartJoiners(st)
			}
			if st != nil && st.members() > 0 || isProbe(sess, name, cmd.pattern) {
				p.ops[key] = true
				p.alone[key] = true
				p.order = append(p.order, key)
				if cmd.resub[i] {
					p.resub[key] = true
				}
			} else if cmd.resub[i] {
				c.resubscribed()
			}
			continue
		}
		if isProbe(sess, name, cmd.pattern) {
			c.disableProbes("SUBSCRIBE "+name, err)
			if cmd.resub[i] {
				c.resubscribed()
			}
			continue
		}
		what := "channel"
		if cmd.pattern {
			what = "pattern"
		}
		failed := fmt.Errorf("%w: %s %q: %w", ErrSubscriptionRefused, what, name, err)
		c.logger.Error("Redis refused a subscription; its subscriptions end", err, watermill.LogFields{what: name})
		if st != nil {
			c.failAll(st, cmd.starters[i], failed)
		}
		if cmd.resub[i] {
			if r := sess.reconnect; r != nil {
				r.event.Refused++
				if cmd.pattern {
					r.event.Patterns--
				} else {
					r.event.Topics--
				}
			}
			c.resubscribed()
		}
	}
	sess.signal()
}

// movedAnswers reports whether the MOVED error reply text can answer the
// oldest command owing a reply: one not answered yet whose channels are in
// the slot it names (a sharded command's channels share one slot).
func movedAnswers(sess *session, text string) bool {
	if len(sess.sent) == 0 {
		return false
	}
	cmd := sess.sent[0]
	if cmd.kind == cmdPing || cmd.replied > 0 || len(cmd.names) == 0 {
		return false
	}
	fields := strings.Fields(text)
	if len(fields) < 2 {
		return true // no slot to tell by: taken as the answer, as before
	}
	slot, err := strconv.Atoi(fields[1])
	return err != nil || slot == hashslot.Of(cmd.names[0])
}

// redisError is an error reply as an error; it is a redis.Error, as
// go-redis's own error replies are.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// restartJoiners moves the subscriptions of st that wait for a PING's PONG
// to its next SUBSCRIBE. Called with mu held and a session.
func (c *connection) restartJoiners(st *channelState) {
	of := func(sns []*subscription) []*subscription {
		var mine []*subscription
		for _, sn := range sns {
			if sn.state == st && sn.phase == phaseWaiting {
				mine = append(mine, sn)
			}
		}
		return mine
	}
	for _, cmd := range c.sess.sent {
		if cmd.kind == cmdPing {
			restart(of(cmd.joiners))
		}
	}
	restart(of(c.sess.pending.joiners))
}
