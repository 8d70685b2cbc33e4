package redispubsub

import (
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys of the sequence stamp a Publisher adds to every message
// (unless PublisherConfig.DisableSequenceNumbers): the publisher's id and the
// message's sequence number on its channel, from 1. A Subscriber reads them
// to count the messages it never received, and removes them from the
// messages it delivers.
const (
	MetadataPublisher = "rps_pub"
	MetadataSequence  = "rps_seq"
)

// stamped returns a copy of msg carrying the sequence stamp; msg itself is
// not modified, so one message may be published on several topics at once.
func stamped(msg *message.Message, publisher string, seq uint64) *message.Message {
	out := message.NewMessage(msg.UUID, msg.Payload)
	out.Metadata = make(message.Metadata, len(msg.Metadata)+2)
	for k, v := range msg.Metadata {
		out.Metadata[k] = v
	}
	out.Metadata[MetadataPublisher] = publisher
	out.Metadata[MetadataSequence] = strconv.FormatUint(seq, 10)
	return out
}
