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
	// position, for a message read from a channel's history: body is its
	// record (history_record.go), at this position.
	position *Position

	once sync.Once
	msg  *message.Message
	err  error
}

// decode returns the decoded message, counting and logging a failure once.
func (in *incoming) decode(s *Subscriber) (*message.Message, error) {
	in.once.Do(func() {
		topic := strings.TrimPrefix(in.channel, s.config.ChannelPrefix)
		if in.position != nil {
			in.msg, in.err = decodeRecord(in.body, *in.position)
		} else {
			in.msg, in.err = unmarshal(s.config.Marshaler, topic, in.body)
		}
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
