package redispubsub

import (
	"bytes"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// RawJSONMarshaler is a Marshaler whose body is the JSON payload alone: what
// graphql-yoga's createPubSub publishes through its Redis event target
// (JSON.stringify(payload)). Use it to exchange events with such peers.
//
// Marshal returns a copy of the payload unchanged (not compacted), or null for
// an empty payload. A payload that is not valid UTF-8 JSON (nested at most
// 10,000 levels, as encoding/json accepts) is refused with an error wrapping
// ErrPayloadNotJSON: the body has no room to say it is anything else. The
// message UUID and metadata are not transmitted.
//
// Unmarshal returns a message whose payload is a copy of body (null for an
// empty body), with a fresh watermill.NewUUID() and empty metadata. A body
// that is not valid UTF-8 JSON (by the same rule) is refused with an error
// wrapping ErrMalformedMessage.
//
// Marshal and Unmarshal accept the same payloads and round-trip them byte for
// byte, except that an empty payload comes back as null.
//
// The zero value is ready to use and safe for concurrent use.
type RawJSONMarshaler struct{}

// Marshal implements Marshaler.
func (RawJSONMarshaler) Marshal(_ string, msg *message.Message) ([]byte, error) {
	if msg == nil {
		return nil, errNilMessage
	}
	if len(msg.Payload) == 0 {
		return nullPayload(), nil
	}
	if err := validateJSONPayload(msg.Payload); err != nil {
		return nil, fmt.Errorf("%w (message %q: %v)", ErrPayloadNotJSON, msg.UUID, err)
	}
	return bytes.Clone(msg.Payload), nil
}

// Unmarshal implements Marshaler.
func (RawJSONMarshaler) Unmarshal(_ string, body []byte) (*message.Message, error) {
	if len(body) == 0 {
		return message.NewMessage(watermill.NewUUID(), nullPayload()), nil
	}
	if err := validateJSONBody(body); err != nil {
		return nil, err
	}
	return message.NewMessage(watermill.NewUUID(), bytes.Clone(body)), nil
}
