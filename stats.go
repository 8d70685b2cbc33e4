package redispubsub

// PublisherStats are a Publisher's counters since it was made. They only grow.
type PublisherStats struct {
	// Published counts messages Redis accepted.
	Published uint64
	// NoSubscribers counts accepted messages that Redis delivered to no
	// subscriber at all, so nobody will ever see them. On a cluster the
	// count is that of the node that took the PUBLISH.
	NoSubscribers uint64
	// Failed counts messages that were not sent or not confirmed.
	Failed uint64
}

// SubscriberStats are a Subscriber's counters since it was made. They only
// grow. A message read once and fanned out to three subscriptions counts once
// in Received and three times in Delivered.
type SubscriberStats struct {
	// Received counts message bodies read from Redis.
	Received uint64
	// DecodeFailures counts bodies the Marshaler could not decode; they are
	// logged and skipped.
	DecodeFailures uint64
	// Delivered counts messages sent on subscription output channels,
	// redeliveries after Nack included.
	Delivered uint64
	// Acked and Nacked count the consumers' answers.
	Acked, Nacked uint64
	// Dropped counts messages lost because the Subscriber's buffer
	// (BufferBytes) was spent or a subscription's QueueSize cap reached (see
	// OverflowPolicy); DroppedByTopic splits it by topic (or pattern).
	Dropped        uint64
	DroppedByTopic map[string]uint64
	// BufferedBytes is what the subscriptions hold now, counted against
	// BufferBytes (a gauge, not a counter).
	BufferedBytes int64
	// Oversized counts bodies larger than MaxMessageBytes, skipped without
	// decoding.
	Oversized uint64
	// Discarded counts messages still queued, or waiting for their Ack, when
	// their subscription ended or the Subscriber closed (with SubscribeFrom,
	// also the history's messages not handed out yet), and those routed to
	// a subscription in the moment it ended. A message answered before its
	// subscription ended counts as Acked or Nacked (a Nacked one that could
	// not be delivered again is Discarded too).
	Discarded uint64
	// Reconnects counts connections re-established after a loss.
	Reconnects uint64
	// Gaps counts messages this Subscriber never received: sequence numbers
	// a Publisher stamped on a subscribed channel that never arrived (see
	// GapEvent). Counted: a hole in a stream already seen, and the start of
	// a stream first seen after a reconnect when the stream began after the
	// subscription (MetadataSince against the Subscriber's clock). Not
	// counted: messages lost to the buffer (Dropped), and the end of a
	// stream, which shows only when the next message of that publisher
	// arrives: a channel's lost last message shows as a reconnect alone.
	Gaps uint64
	// PossibleGaps counts the streams first seen after a reconnect whose
	// start may have been lost or may have come before the subscription
	// (the stream began before it, or its Publisher did not stamp when), or
	// may have been received and forgotten (past the 69,632 streams one
	// Redis subscription tracks).
	PossibleGaps uint64
	// Duplicates counts stamped messages received a second time (go-redis
	// retried a Publisher's pipeline after Redis had run it); they are
	// dropped, not delivered. With Recover, so are messages whose offset
	// was routed already.
	Duplicates uint64

	// Recovered counts messages that SubscriberConfig.Recover took from a
	// channel's history: missed live, delivered in offset order. (Counted
	// once per message, however many subscriptions of its topic get it.)
	Recovered uint64
	// Unrecovered counts messages a recovering Subscriber missed that the
	// history no longer held (trimmed to History.Size, or its stream lost):
	// exactly the offsets that never came.
	Unrecovered uint64
	// HistoryLost counts the times a recovering Subscriber found a
	// channel's history lost (its epoch changed: expired after History.TTL
	// without publications, evicted, flushed) after it had routed messages
	// of it: what it missed of the lost history is not known, and not in
	// Unrecovered.
	HistoryLost uint64

	// Liveness probes (see SubscriberConfig.ProbeInterval); probes never
	// count in Received. ProbesSent counts the probes Redis accepted,
	// ProbesReceived those that arrived on their connection.
	ProbesSent, ProbesReceived uint64
	// DeafConnections counts the connections dropped because a probe Redis
	// accepted did not arrive within half a ProbeInterval (each is also a
	// Reconnect, whose Cause wraps ErrConnectionDeaf).
	DeafConnections uint64
	// ProbeRoundTrip is the time from a probe's PUBLISH to its arrival, in
	// buckets of 1 ms to 5 s (its Bounds).
	ProbeRoundTrip DurationHistogram
}
