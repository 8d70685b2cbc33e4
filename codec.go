package redispubsub

import (
	"slices"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill/message"
)

// stamp is the sequence stamp a Publisher adds to a message: its id, the
// message's number on its channel, and a checksum of that channel.
type stamp struct {
	publisher string
	seq       uint64
	since     int64 // MetadataSince; 0 when unknown
	// channel is the checksum of the channel the stamp was made for
	// (MetadataChannel), when scoped; Publishers before it was added do not
	// write it.
	channel uint32
	scoped  bool
	// history, on a Publisher's stamp, writes MetadataEpoch with epoch (the
	// Publisher's latest knowledge of the channel's history's epoch, which
	// the history script replaces when it is another) and right after it
	// an empty MetadataOffset for the script to fill (see offsetMark).
	history bool
	epoch   string
	// form is the payload's envelope form when formKnown: with a history,
	// encode finds it once for the envelope and the record.
	form      payloadForm
	formKnown bool
	// position is what a received body carries in MetadataOffset and
	// MetadataEpoch (Offset 0: none); read by stampOf.
	position Position
}

// sequenced reports whether st has a sequence number.
func (st stamp) sequenced() bool { return st.seq != 0 }

// codec is implemented by the package's own marshalers, which the Publisher
// and the Subscriber call without the copies that Marshaler needs: the stamp
// is written into the body without copying the message, and a body is
// decoded from the string go-redis returns, without the stamp.
type codec interface {
	// marshalStamped is Marshal of msg with st added to its metadata.
	marshalStamped(topic string, msg *message.Message, st stamp) ([]byte, error)
	// unmarshalUnstamped is Unmarshal without the stamp's metadata. body's
	// memory is the Subscriber's, read off the socket for this message
	// alone and never used again: the message's payload may share it.
	unmarshalUnstamped(topic, body string) (*message.Message, error)
}

// marshal encodes msg, stamped unless st is nil.
func marshal(m Marshaler, topic string, msg *message.Message, st *stamp) ([]byte, error) {
	if st == nil {
		return m.Marshal(topic, msg)
	}
	if c, ok := m.(codec); ok {
		return c.marshalStamped(topic, msg, *st)
	}
	return m.Marshal(topic, stamped(msg, *st))
}

// unmarshal decodes body, and removes the stamp from the message's metadata.
func unmarshal(m Marshaler, topic, body string) (*message.Message, error) {
	if c, ok := m.(codec); ok {
		return c.unmarshalUnstamped(topic, body)
	}
	msg, err := m.Unmarshal(topic, []byte(body))
	if err == nil {
		delete(msg.Metadata, MetadataPublisher)
		delete(msg.Metadata, MetadataSequence)
		delete(msg.Metadata, MetadataSince)
		delete(msg.Metadata, MetadataChannel)
	}
	return msg, err
}

// bytesOf views s as bytes, for decoders that neither retain nor modify
// them.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// stampedKeys returns the metadata keys of msg, with the stamp's when st is
// not nil, sorted; keys may be used as the buffer.
func stampedKeys(keys []string, md message.Metadata, st *stamp) []string {
	for k := range md {
		switch {
		case st == nil:
		case st.sequenced() && isStampKey([]byte(k)):
			continue
		case st.history && (k == MetadataEpoch || k == MetadataOffset):
			continue // another channel's position: this one gets its own
		}
		keys = append(keys, k)
	}
	if st != nil && st.sequenced() {
		keys = append(keys, MetadataPublisher, MetadataSequence)
		if st.since != 0 {
			keys = append(keys, MetadataSince)
		}
		if st.scoped {
			keys = append(keys, MetadataChannel)
		}
	}
	if st != nil && st.history {
		keys = append(keys, MetadataEpoch) // MetadataOffset follows it
	}
	slices.Sort(keys)
	return keys
}

// isStampKey reports whether the metadata key k (raw bytes) is one of the
// stamp's.
func isStampKey(k []byte) bool {
	return string(k) == MetadataPublisher || string(k) == MetadataSequence || string(k) == MetadataSince ||
		string(k) == MetadataChannel
}
