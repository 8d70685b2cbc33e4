package redispubsub

import (
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/vmihailenco/msgpack/v5"
)

// Metadata keys of the sequence stamp a Publisher adds to every message
// (unless PublisherConfig.DisableSequenceNumbers): the publisher's id and the
// message's sequence number on its channel, from 1. A Subscriber reads them
// to count the messages it never received, and removes them from the
// messages it delivers.
const (
	MetadataPublisher = "rps_pub"
	MetadataSequence  = "rps_seq"
	// MetadataSince is the Unix time in milliseconds, by the Publisher's
	// clock, at which it published number 1 on the channel. A Subscriber
	// that was away compares it with when it subscribed, to tell whether the
	// start of a stream it never saw was lost or came before its time.
	MetadataSince = "rps_since"
)

// stamped returns a copy of msg carrying the sequence stamp; msg itself is
// not modified, so one message may be published on several topics at once.
func stamped(msg *message.Message, publisher string, seq uint64, since int64) *message.Message {
	metadata := make(message.Metadata, len(msg.Metadata)+3)
	for k, v := range msg.Metadata {
		metadata[k] = v
	}
	metadata[MetadataPublisher] = publisher
	metadata[MetadataSequence] = strconv.FormatUint(seq, 10)
	if since != 0 {
		metadata[MetadataSince] = strconv.FormatInt(since, 10)
	}
	// Only for the Marshaler, which reads these three fields: no Ack state.
	return &message.Message{UUID: msg.UUID, Metadata: metadata, Payload: msg.Payload}
}

// stampReader is implemented by the marshalers whose bodies carry metadata,
// to read the sequence stamp without decoding a whole body: the Subscriber's
// reader does it for every message, and must keep up with Redis.
type stampReader interface {
	stampOf(body string) (stamp, bool)
}

// stampOf finds the stamp in the envelope's "metadata" member, which is
// always the last one the Publisher writes: it looks at the last
// `"metadata":{` only, and only when that object closes the envelope, so a
// stamp-shaped object inside a payload is never taken for the real stamp.
// The body is not validated (that is Unmarshal's job, later), so the scan
// checks every step it relies on. For a body that Unmarshal accepts, a stamp
// found is the one in the decoded metadata (a repeated key counts by its last
// value, as in Unmarshal); a body with whitespace around the metadata may
// have its stamp missed, never misread.
func (JSONEnvelopeMarshaler) stampOf(body string) (stamp, bool) {
	i := strings.LastIndex(body, `"metadata":{`)
	if i < 0 {
		return stamp{}, false
	}
	object := body[i+len(`"metadata":`):]
	end := endOfJSONValue(object, 0)
	if object[end:] != "}" {
		return stamp{}, false
	}
	publisher, seqText, sinceText, ok := stampMembers(object[:end])
	if !ok {
		return stamp{}, false
	}
	return parseStamp(publisher, seqText, sinceText)
}

// parseStamp checks and parses a stamp's members; since is optional
// (Publishers before it was added do not write it).
func parseStamp(publisher, seqText, sinceText string) (stamp, bool) {
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if publisher == "" || err != nil || seq == 0 {
		return stamp{}, false
	}
	since, _ := strconv.ParseInt(sinceText, 10, 64)
	return stamp{publisher: publisher, seq: seq, since: since}, true
}

// stampMembers returns the last values of the MetadataPublisher and
// MetadataSequence members of the metadata object. ok is false when one is
// missing, or when the object is not an object of string members as far as
// the scan can tell.
func stampMembers(object string) (publisher, seqText, sinceText string, ok bool) {
	last := len(object) - 1 // the closing brace
	if last < 1 || object[last] != '}' {
		return "", "", "", false
	}
	var havePublisher, haveSeq bool
	for i := skipJSONSpace(object, 1); i < last; {
		if object[i] != '"' {
			return "", "", "", false
		}
		keyEnd := endOfJSONString(object, i)
		key := object[i:keyEnd]
		i = skipJSONSpace(object, keyEnd)
		if i >= last || object[i] != ':' {
			return "", "", "", false
		}
		i = skipJSONSpace(object, i+1)
		if i >= last || object[i] != '"' {
			return "", "", "", false // not a string: the body does not decode
		}
		valueEnd := endOfJSONString(object, i)
		if valueEnd > last {
			return "", "", "", false
		}
		switch {
		case jsonStringEquals(key, MetadataPublisher):
			publisher, havePublisher = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataSequence):
			seqText, haveSeq = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataSince):
			sinceText, _ = unquoteJSONString(object[i:valueEnd])
		}
		i = skipJSONSpace(object, valueEnd)
		if i < last {
			if object[i] != ',' {
				return "", "", "", false
			}
			i = skipJSONSpace(object, i+1)
			if i >= last {
				return "", "", "", false // a trailing comma
			}
		}
	}
	return publisher, seqText, sinceText, havePublisher && haveSeq
}

// stampOf decodes the head of the body (version, UUID, metadata), which
// precedes the payload.
func (MsgpackMarshaler) stampOf(body string) (stamp, bool) {
	dec := msgpack.NewDecoder(strings.NewReader(body))
	if n, err := dec.DecodeArrayLen(); err != nil || n != 4 {
		return stamp{}, false
	}
	if v, err := dec.DecodeUint(); err != nil || v != msgpackVersion {
		return stamp{}, false
	}
	if err := dec.Skip(); err != nil { // UUID
		return stamp{}, false
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return stamp{}, false
	}
	var publisher, seqText, sinceText string
	for range n {
		k, err1 := dec.DecodeString()
		v, err2 := dec.DecodeString()
		if err1 != nil || err2 != nil {
			return stamp{}, false
		}
		switch k {
		case MetadataPublisher:
			publisher = v
		case MetadataSequence:
			seqText = v
		case MetadataSince:
			sinceText = v
		}
	}
	return parseStamp(publisher, seqText, sinceText)
}

// maxTrackedStreams bounds the streams (publisher and channel) one Redis
// subscription tracks. A forgotten stream is picked up again from its next
// message, without a gap (and a duplicate of it would be delivered).
const maxTrackedStreams = 4096

// GapEvent reports messages that a Subscriber never received: sequence
// numbers First to Last (inclusive) of one publisher on one channel. They
// were lost by Redis (published while the Subscriber was disconnected, or on
// a connection Redis closed) or never sent (their Publish failed).
type GapEvent struct {
	Topic       string
	Publisher   string
	First, Last uint64
	// Possible is set when the messages may as well have been published
	// before the Subscriber subscribed: the first message of a stream it
	// had never seen arrived after a reconnect, and the stream began (by
	// MetadataSince) before the subscription, or its Publisher did not say
	// when. Such gaps count in SubscriberStats.PossibleGaps, not Gaps.
	Possible bool
}

// Missing is the number of messages in the gap.
func (g GapEvent) Missing() uint64 { return g.Last - g.First + 1 }

// sequenceTracker remembers the last sequence number seen per publisher and
// channel for one Redis subscription.
type sequenceTracker map[streamKey]uint64

// streamKey names the stream of one publisher on one channel.
type streamKey struct{ publisher, channel string }

// sequenceVerdict is what a sequence number says of the stream it is in.
type sequenceVerdict int

const (
	inSequence  sequenceVerdict = iota // the next number
	newStream                          // the first number seen of its stream
	gapFound                           // numbers were skipped
	possibleGap                        // numbers before the first seen may have been lost
	duplicate                          // seen already: a retried pipeline sent it again
)

// observe records seq. The first message of a stream reveals no gap by
// itself (the caller knows whether it could have missed its start); a
// number not above the last one seen is a duplicate (a Publisher never
// reuses one: it takes a new id instead). A gap's first missing number is
// returned; its last is seq-1.
func (t sequenceTracker) observe(publisher, channel string, seq uint64) (verdict sequenceVerdict, firstMissing uint64) {
	key := streamKey{publisher, channel}
	prev, known := t[key]
	switch {
	case known && seq <= prev:
		return duplicate, 0
	case !known && len(t) >= maxTrackedStreams:
		for forget := range t {
			delete(t, forget)
			break
		}
	}
	if !known {
		// The names may be parts of a message body: keep copies.
		key = streamKey{strings.Clone(publisher), strings.Clone(channel)}
	}
	t[key] = seq
	switch {
	case !known:
		return newStream, 0
	case seq > prev+1:
		return gapFound, prev + 1
	}
	return inSequence, 0
}
