package redispubsub

import (
	"hash/maphash"
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
	// MetadataPublisher is the Publisher's id: a short random string, new
	// for every Publisher (and when it forgets its channels, past 4,096).
	MetadataPublisher = "rps_pub"
	// MetadataSequence is the message's number on its channel among the
	// messages of that Publisher id, in decimal, consecutive from 1 (a
	// message whose Publish failed keeps its number: a gap).
	MetadataSequence = "rps_seq"
	// MetadataSince is the Unix time in milliseconds, by the Publisher's
	// clock, at which it published number 1 on the channel. A Subscriber
	// that was away compares it with when it subscribed, to tell whether the
	// start of a stream it never saw was lost or came before its time.
	MetadataSince = "rps_since"
	// MetadataChannel is a checksum of the Redis channel the stamp was made
	// for (ChannelPrefix included): FNV-1a of its bytes, 32 bits, as 8
	// lowercase hex digits. A stamp speaks only for that channel. A peer
	// that passes a received envelope on to another channel unchanged (a
	// TypeScript listener forwarding `detail`) relays the stamp, and a
	// Subscriber of the other channel ignores it, as if the message were
	// unstamped, instead of counting duplicates and gaps of a stream that is
	// not that channel's. A stamp without it (from a Publisher before it was
	// added) is read as before.
	MetadataChannel = "rps_ch"
)

// channelChecksum is the checksum of channel that MetadataChannel carries:
// 32-bit FNV-1a.
func channelChecksum(channel string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(channel); i++ {
		h ^= uint32(channel[i])
		h *= 16777619
	}
	return h
}

// appendChannelChecksum appends sum as MetadataChannel writes it: 8
// lowercase hex digits.
func appendChannelChecksum(b []byte, sum uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[sum>>shift&0xf])
	}
	return b
}

// parseChannelChecksum parses what appendChannelChecksum writes, and
// nothing else.
func parseChannelChecksum(text string) (uint32, bool) {
	if len(text) != 8 {
		return 0, false
	}
	var sum uint32
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		sum = sum<<4 | uint32(c)
	}
	return sum, true
}

// stamped returns a copy of msg carrying the sequence stamp st; msg itself
// is not modified, so one message may be published on several topics at
// once.
func stamped(msg *message.Message, st stamp) *message.Message {
	metadata := make(message.Metadata, len(msg.Metadata)+4)
	for k, v := range msg.Metadata {
		metadata[k] = v
	}
	metadata[MetadataPublisher] = st.publisher
	metadata[MetadataSequence] = strconv.FormatUint(st.seq, 10)
	if st.since != 0 {
		metadata[MetadataSince] = strconv.FormatInt(st.since, 10)
	}
	if st.scoped {
		metadata[MetadataChannel] = string(appendChannelChecksum(nil, st.channel))
	}
	// Only for the Marshaler, which reads these fields: no Ack state.
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
	m, ok := stampMembers(object[:end])
	if !ok {
		return stamp{}, false
	}
	return parseStamp(m)
}

// stampTexts are the stamp's metadata values as a body carries them.
type stampTexts struct {
	publisher, seq, since, channel string
	haveChannel                    bool
	offset, epoch                  string // MetadataOffset and MetadataEpoch
}

// parseStamp checks and parses a stamp's members; since and channel are
// optional (Publishers before they were added do not write them). A
// channel checksum that is not one makes the stamp unreadable: it is not
// known which channel it speaks for.
//
// A body may carry a position (MetadataOffset, MetadataEpoch) with or
// without a sequence stamp: the stamp returned has then a position, and ok
// is true when it has either.
func parseStamp(m stampTexts) (stamp, bool) {
	var st stamp
	if offset, err := strconv.ParseUint(m.offset, 10, 64); err == nil && offset > 0 && m.epoch != "" {
		st.position = Position{Offset: offset, Epoch: m.epoch}
	}
	seq, err := strconv.ParseUint(m.seq, 10, 64)
	if m.publisher == "" || err != nil || seq == 0 {
		return st, st.position.Offset != 0
	}
	st.publisher, st.seq = m.publisher, seq
	st.since, _ = strconv.ParseInt(m.since, 10, 64)
	if m.haveChannel {
		if st.channel, st.scoped = parseChannelChecksum(m.channel); !st.scoped {
			return stamp{}, false
		}
	}
	return st, true
}

// stampMembers returns the last values of the stamp's members of the
// metadata object. ok is false when it has neither MetadataPublisher and
// MetadataSequence nor MetadataOffset and MetadataEpoch, or when the object
// is not an object of string members as far as the scan can tell.
func stampMembers(object string) (m stampTexts, ok bool) {
	last := len(object) - 1 // the closing brace
	if last < 1 || object[last] != '}' {
		return stampTexts{}, false
	}
	var havePublisher, haveSeq bool
	for i := skipJSONSpace(object, 1); i < last; {
		if object[i] != '"' {
			return stampTexts{}, false
		}
		keyEnd := endOfJSONString(object, i)
		key := object[i:keyEnd]
		i = skipJSONSpace(object, keyEnd)
		if i >= last || object[i] != ':' {
			return stampTexts{}, false
		}
		i = skipJSONSpace(object, i+1)
		if i >= last || object[i] != '"' {
			return stampTexts{}, false // not a string: the body does not decode
		}
		valueEnd := endOfJSONString(object, i)
		if valueEnd > last {
			return stampTexts{}, false
		}
		switch {
		case jsonStringEquals(key, MetadataPublisher):
			m.publisher, havePublisher = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataSequence):
			m.seq, haveSeq = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataSince):
			m.since, _ = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataChannel):
			m.channel, _ = unquoteJSONString(object[i:valueEnd])
			m.haveChannel = true
		case jsonStringEquals(key, MetadataOffset):
			m.offset, _ = unquoteJSONString(object[i:valueEnd])
		case jsonStringEquals(key, MetadataEpoch):
			m.epoch, _ = unquoteJSONString(object[i:valueEnd])
		}
		i = skipJSONSpace(object, valueEnd)
		if i < last {
			if object[i] != ',' {
				return stampTexts{}, false
			}
			i = skipJSONSpace(object, i+1)
			if i >= last {
				return stampTexts{}, false // a trailing comma
			}
		}
	}
	return m, havePublisher && haveSeq || m.offset != "" && m.epoch != ""
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
	var m stampTexts
	for range n {
		k, err1 := dec.DecodeString()
		v, err2 := dec.DecodeString()
		if err1 != nil || err2 != nil {
			return stamp{}, false
		}
		switch k {
		case MetadataPublisher:
			m.publisher = v
		case MetadataSequence:
			m.seq = v
		case MetadataSince:
			m.since = v
		case MetadataChannel:
			m.channel, m.haveChannel = v, true
		case MetadataOffset:
			m.offset = v
		case MetadataEpoch:
			m.epoch = v
		}
	}
	return parseStamp(m)
}

// The streams (publisher and channel) that one Redis subscription tracks
// are bounded, since publishers come and go (each restart is a new id) and
// a pattern subscription may see any number of channels. Counts must never
// say loss where there was none: a stream's next message after a reconnect
// can only be checked against its last number if that is still known, and a
// stream that is not known cannot be told from a new one that lost its
// start. So what is forgotten is forgotten in two steps:
//
//   - maxTrackedStreams streams are kept by name, exactly: a number not
//     above the last is a duplicate, dropped.
//   - When a stream has to leave them, its last number is kept under a
//     64-bit hash of its name (about 40 bytes with the map's own, against
//     about 160 for a name), for maxHashedStreams more streams. Its next message is checked against
//     that number as before, but never dropped as a duplicate: two names of
//     one hash (about one chance in 10^10 at that size) could make a count
//     wrong, never lose a message.
//   - Only a stream that has to leave those too is forgotten for good. From
//     then on, the start of a stream first seen after a reconnect may be one
//     it forgot: it counts as a possible gap, never a certain one.
//
// At most about 0.6 MiB for the names and 2.7 MiB for the hashes (measured),
// for a Redis subscription that sees over 70,000 streams; a channel with a
// few publishers costs a few entries.
const (
	maxTrackedStreams = 4096
	maxHashedStreams  = 64 << 10
)

// GapEvent reports messages that a Subscriber never received: sequence
// numbers First to Last (inclusive) of one publisher on one channel, or, on
// a channel with a history (PublisherConfig.History), its offsets First to
// Last (MetadataOffset; Publisher is empty, or, for a pattern subscription,
// the history's epoch). They
// were lost by Redis (published while the Subscriber was disconnected, or on
// a connection Redis closed) or never sent (their Publish failed).
type GapEvent struct {
	// Topic is the channel of the gap without ChannelPrefix: for a pattern
	// subscription, the concrete topic, not the pattern.
	Topic string
	// Publisher is the id of the Publisher whose messages are missing
	// (MetadataPublisher).
	Publisher string
	// First and Last are the first and the last missing sequence number
	// (MetadataSequence), Last >= First.
	First, Last uint64
	// Possible is set when the messages may as well have been received, or
	// published before the Subscriber subscribed: the first message of a
	// stream it had never seen arrived after a reconnect, and the stream
	// began (by MetadataSince) before the subscription, or its Publisher
	// did not say when, or the Subscriber may have seen it and forgotten it
	// (past the 69,632 streams one Redis subscription tracks). Such gaps count in SubscriberStats.PossibleGaps, not
	// Gaps.
	Possible bool
	// Unrecovered is set, with SubscriberConfig.Recover, for messages of a
	// channel with a history (PublisherConfig.History) that the Subscriber
	// missed and the history no longer held: First to Last are their
	// offsets (MetadataOffset), Publisher is empty. Counted in
	// SubscriberStats.Unrecovered.
	Unrecovered bool
	// HistoryLost is set, with Unrecovered, when the channel's history was
	// lost (its epoch changed: expired, evicted, flushed): how many
	// messages followed offset First-1 in it is not known (Last is 0 and
	// Missing 0). Counted in SubscriberStats.HistoryLost.
	HistoryLost bool
}

// Missing is the number of messages in the gap; 0 when not known.
func (g GapEvent) Missing() uint64 {
	if g.Last < g.First {
		return 0
	}
	return g.Last - g.First + 1
}

// sequenceTracker remembers the last sequence number seen per publisher and
// channel for one Redis subscription; nil until its first stamped message.
type sequenceTracker = *streamTracker

type streamTracker struct {
	named  map[streamKey]uint64 // by name: at most maxTrackedStreams
	hashed map[uint64]uint64    // by hash of the name: at most maxHashedStreams
	// lost is set once a stream was forgotten for good.
	lost bool
}

func newSequenceTracker() *streamTracker {
	return &streamTracker{named: make(map[streamKey]uint64)}
}

// streamKey names the stream of one publisher on one channel.
type streamKey struct{ publisher, channel string }

// streamSeed seeds the hashes of the streams forgotten by name.
var streamSeed = maphash.MakeSeed()

func (k streamKey) hash() uint64 { return maphash.Comparable(streamSeed, k) }

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
// itself (the caller knows whether it could have missed its start, see
// forgot); a number not above the last one seen is a duplicate (a
// Publisher never reuses one: it takes a new id instead). A gap's first
// missing number is returned; its last is seq-1.
func (t *streamTracker) observe(publisher, channel string, seq uint64) (verdict sequenceVerdict, firstMissing uint64) {
	key := streamKey{publisher, channel}
	prev, known := t.named[key]
	if known {
		switch {
		case seq <= prev:
			return duplicate, 0
		case seq > prev+1:
			t.named[key] = seq
			return gapFound, prev + 1
		}
		t.named[key] = seq
		return inSequence, 0
	}
	verdict = newStream
	if t.hashed != nil {
		h := key.hash()
		if prev, known = t.hashed[h]; known {
			delete(t.hashed, h)
			switch {
			case seq <= prev:
				// Most likely a duplicate; delivered, since a hash is not
				// a name.
				verdict, seq = inSequence, prev
			case seq > prev+1:
				verdict, firstMissing = gapFound, prev+1
			default:
				verdict = inSequence
			}
		}
	}
	if len(t.named) >= maxTrackedStreams {
		for forget, last := range t.named {
			delete(t.named, forget)
			t.remember(forget.hash(), last)
			break
		}
	}
	// The names may be parts of a message body: keep copies.
	t.named[streamKey{strings.Clone(publisher), strings.Clone(channel)}] = seq
	return verdict, firstMissing
}

// remember keeps the last number of a stream forgotten by name under its
// hash, forgetting another for good when there is no room.
func (t *streamTracker) remember(h, last uint64) {
	if t.hashed == nil {
		t.hashed = make(map[uint64]uint64)
	}
	if len(t.hashed) >= maxHashedStreams {
		for forget := range t.hashed {
			delete(t.hashed, forget)
			t.lost = true
			break
		}
	}
	t.hashed[h] = last
}

// forgot reports whether a stream not known to the tracker may be one it
// forgot for good, rather than one it never saw.
func (t *streamTracker) forgot() bool { return t.lost }
