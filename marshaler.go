package redispubsub

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Marshaler turns Watermill messages into Redis Pub/Sub bodies and back.
//
// The topic passed to both methods is the Watermill topic, i.e. the Redis
// channel without the configured channel prefix. The channel is authoritative
// for the topic: a Marshaler never derives the topic from the body.
//
// Implementations must be safe for concurrent use. Three are provided:
//
//   - [JSONEnvelopeMarshaler] (the default): a JSON object carrying type, id,
//     payload, uuid and metadata, wire-compatible with the TypeScript Redis
//     event targets. It carries every payload: JSON embedded as it is, any
//     other bytes as a base64 string marked "payload_encoding":"base64".
//   - [RawJSONMarshaler]: the body is the JSON payload alone, as published by
//     graphql-yoga's createPubSub. UUID and metadata are not transmitted, and
//     a payload that is not JSON is refused.
//   - [MsgpackMarshaler]: binary-safe; round-trips any payload bytes, the UUID
//     and the metadata exactly. Only Go peers speak it.
type Marshaler interface {
	// Marshal encodes msg for publication on topic (the topic without the
	// channel prefix). It does not modify msg.
	Marshal(topic string, msg *message.Message) ([]byte, error)

	// Unmarshal decodes a body received on topic (the channel minus the
	// prefix). The returned message does not retain body. Errors caused by the
	// content of body wrap ErrMalformedMessage.
	Unmarshal(topic string, body []byte) (*message.Message, error)
}

// ErrMalformedMessage is wrapped by every error a Marshaler returns from
// Unmarshal because the body cannot be decoded. Test for it with errors.Is;
// the wrapping error says what was wrong.
var ErrMalformedMessage = errors.New("redispubsub: malformed message body")

// ErrPayloadNotJSON is wrapped (together with the message UUID and the syntax
// error) by RawJSONMarshaler's Marshal when the message payload is not valid
// UTF-8 JSON, since its body is the payload alone. The default
// JSONEnvelopeMarshaler and MsgpackMarshaler carry any payload.
var ErrPayloadNotJSON = errors.New("redispubsub: payload is not valid JSON; " +
	"RawJSONMarshaler carries only JSON, JSONEnvelopeMarshaler and MsgpackMarshaler carry any payload")

// errNilMessage is returned by Marshal for a nil *message.Message.
var errNilMessage = errors.New("redispubsub: cannot marshal a nil message")

// Compile-time checks that the provided marshalers implement Marshaler.
var (
	_ Marshaler = JSONEnvelopeMarshaler{}
	_ Marshaler = RawJSONMarshaler{}
	_ Marshaler = MsgpackMarshaler{}
)
