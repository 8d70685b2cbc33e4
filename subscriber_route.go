package redispubsub

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

var (
	errGap       = errors.New("gap in the message sequence")
	errOversized = errors.New("redispubsub: message larger than SubscriberConfig.MaxMessageBytes")
)

// checkSequence takes the sequence stamp stp (when stamped, and made for
// channel) and says whether it is new, a duplicate (its GapEvent's First is
// the duplicate's number) or reveals a gap in what st received. The first
// message of a stream it never saw, after the connection was interrupted,
// reveals that its start was lost when the stream began after the
// subscription (by MetadataSince), or may have been when it began before,
// does not say, or may be a stream the tracker forgot (see
// maxTrackedStreams). Called with the connection's mu held.
func (s *Subscriber) checkSequence(st *channelState, channel string, stp stamp, stamped bool) (GapEvent, sequenceVerdict) {
	if !stamped || (stp.scoped && stp.channel != channelChecksum(channel)) {
		// No stamp, or one made for another channel (a peer relayed the
		// envelope unchanged): it says nothing of this channel's stream.
		return GapEvent{}, inSequence
	}
	if st.sequences == nil {
		st.sequences = newSequenceTracker()
	}
	ev := GapEvent{Topic: strings.TrimPrefix(channel, s.config.ChannelPrefix), Publisher: stp.publisher}
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

// reportGap counts, logs and reports messages never received, or maybe
// never received.
func (s *Subscriber) reportGap(ev GapEvent) {
	fields := watermill.LogFields{
		"topic": ev.Topic, "publisher": ev.Publisher, "first": ev.First, "last": ev.Last, "missing": ev.Missing(),
	}
	if ev.Possible {
		s.stats.possibleGaps.Add(1)
		s.logger.Error("Messages perhaps never received: a stream first seen after a reconnect began before the subscription",
			errGap, fields)
	} else {
		s.stats.gaps.Add(ev.Missing())
		s.logger.Error("Messages never received (Redis Pub/Sub does not keep them)", errGap, fields)
	}
	if hook := s.config.OnGap; hook != nil {
		s.hooks.call(func() { hook(ev) })
	}
}

// reportReconnect counts, logs and reports a re-established connection.
func (s *Subscriber) reportReconnect(r *pendingReconnect) {
	ev := r.event
	ev.Downtime = time.Since(r.lostAt)
	s.stats.reconnects.Add(1)
	fields := watermill.LogFields{
		"cause": ev.Cause.Error(), "attempts": ev.Attempts, "downtime": ev.Downtime.String(),
		"topics": ev.Topics, "patterns": ev.Patterns,
	}
	if ev.Node != "" {
		fields["node"] = ev.Node
	}
	s.logger.Info("Redis Pub/Sub reconnected and resubscribed", fields)
	if hook := s.config.OnReconnect; hook != nil {
		s.hooks.call(func() { hook(ev) })
	}
}

// incoming is a message body read from Redis. It is decoded at most once, by
// the first subscription that takes it from its queue, and shared by all.
type incoming struct {
	channel string
	pattern bool
	body    string
	shared  bool  // queued for more than one subscription
	size    int64 // counted in the Subscriber's buffer, per queue

	once sync.Once
	msg  *message.Message
	err  error
}

// decode returns the decoded message, counting and logging a failure once.
func (in *incoming) decode(s *Subscriber) (*message.Message, error) {
	in.once.Do(func() {
		topic := strings.TrimPrefix(in.channel, s.config.ChannelPrefix)
		in.msg, in.err = unmarshal(s.config.Marshaler, topic, in.body)
		if in.err != nil {
			s.stats.decodeFailures.Add(1)
			s.logger.Error("Cannot decode message, skipped", in.err, watermill.LogFields{
				"channel": in.channel, "body_bytes": len(in.body),
			})
			return
		}
		if in.pattern {
			in.msg.Metadata.Set(MetadataTopic, topic)
		}
		in.body = ""
	})
	return in.msg, in.err
}
