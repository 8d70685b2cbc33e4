package redispubsub

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// JSONEnvelopeMarshaler is the default Marshaler. It carries every Watermill
// payload. Its body is a compact JSON object, wire-compatible with the
// TypeScript Redis event targets, with its keys in this order:
//
//	{"type":"call.responded","id":"uuid-123","payload":{"ok":true},"uuid":"<watermill uuid>","metadata":{"k":"v"}}
//
// and, for a payload that is not JSON,
//
//	{"type":"file.uploaded","payload":"AAEC/w==","payload_encoding":"base64","uuid":"<watermill uuid>"}
//
// Marshal guarantees:
//
//   - type and id are the topic split at its first ':' (see SplitTopic);
//     "type" is always present.
//   - "id" is omitted when the topic has no id (it is never "id":""). This is
//     the body a TypeScript peer publishes for the same event: it dispatches
//     detail {type, id, payload} with an undefined id, and JSON.stringify drops
//     undefined properties.
//   - "payload" is the message payload embedded as JSON when it is valid UTF-8
//     JSON nested at most 9,999 levels deep: compacted (insignificant
//     whitespace removed) but otherwise byte for byte as given. It is not
//     re-serialised, so numbers, escapes and key order stay as the publisher
//     wrote them. An empty payload is null.
//   - Any other payload (text, protobuf, any bytes, invalid UTF-8, JSON nested
//     10,000 levels or deeper, which encoding/json and so the decoder would
//     refuse inside the envelope) is a JSON string holding its standard
//     base64 encoding with padding (RFC 4648 section 4, what Node's
//     Buffer.toString("base64") writes), and is followed by the member
//     "payload_encoding":"base64". Decoding gives back its exact bytes.
//     Marshal never refuses a payload.
//   - "uuid" is omitted when the message UUID is empty, "metadata" when the
//     message has no metadata. Metadata keys are written in sorted order.
//   - Strings are escaped as JavaScript's JSON.stringify escapes them: only
//     '"', '\\' and control characters below U+0020 (as \b \t \n \f \r or
//     \u00XX); '<', '>', '&', U+2028 and U+2029 are written as themselves.
//     Invalid UTF-8 in the topic, UUID or metadata is written as U+FFFD.
//
// So for a topic and message whose payload is compact JSON as JSON.stringify
// writes it, the body equals byte for byte what JSON.stringify gives for
// {type, id, payload, uuid, metadata} with the same (sorted) metadata; for
// other payloads, what it gives for {type, id, payload: base64,
// payload_encoding: "base64", uuid, metadata}. Every body Marshal returns,
// Unmarshal accepts.
//
// Unmarshal accepts what a TypeScript peer sends:
//
//   - an empty body, or the body null (what graphql-yoga publishes for an
//     undefined or null detail): the payload is null;
//   - a missing "payload" is null; otherwise the message payload is a copy
//     of the raw JSON text of "payload" (with the body's whitespace inside it,
//     if any), never a re-serialisation;
//   - with "payload_encoding":"base64" (in any position), "payload" must be a
//     string holding standard base64 with padding, and the message payload is
//     the bytes it encodes; a missing or null "payload_encoding" means the
//     payload is JSON;
//   - a missing, null or empty "uuid" gets a fresh watermill.NewUUID();
//   - a missing or null "metadata" gives empty metadata;
//   - "type", "id" and unknown members are ignored: the channel, not the body,
//     is authoritative for the topic;
//   - member names are matched exactly (case-sensitive) and, as in
//     JavaScript's JSON.parse, a repeated member replaces the earlier one.
//
// It returns an error wrapping ErrMalformedMessage, saying what was wrong,
// when the body is not valid UTF-8 JSON (nested at most 10,000 levels, as
// encoding/json accepts), is not an object (or null), "uuid" is not a
// string, "metadata" is not an object, a metadata value is not a string
// (also one that a later member of the same name would replace),
// "payload_encoding" is neither null nor "base64", or a base64 "payload" is
// not a string of valid base64.
//
// The zero value is ready to use and safe for concurrent use.
type JSONEnvelopeMarshaler struct{}

// base64Encoding is the member that follows a base64 payload.
const base64Encoding = `,"payload_encoding":"base64"`

// Marshal implements Marshaler. It fails only for a nil message.
func (JSONEnvelopeMarshaler) Marshal(topic string, msg *message.Message) ([]byte, error) {
	return marshalEnvelope(topic, msg, nil)
}

func (JSONEnvelopeMarshaler) marshalStamped(topic string, msg *message.Message, st stamp) ([]byte, error) {
	return marshalEnvelope(topic, msg, &st)
}

// marshalEnvelope encodes msg, with st in its metadata when not nil.
func marshalEnvelope(topic string, msg *message.Message, st *stamp) ([]byte, error) {
	if msg == nil {
		return nil, errNilMessage
	}
	eventType, id := SplitTopic(topic)
	var form payloadForm
	if st != nil && st.formKnown {
		form = st.form
	} else {
		form = envelopePayloadForm(msg.Payload)
	}

	size := len(`{"type":"","id":"","payload":,"uuid":"","metadata":{}}`) +
		len(eventType) + len(id) + form.size(len(msg.Payload)) + len(msg.UUID)
	for k, v := range msg.Metadata {
		size += len(k) + len(v) + len(`"":"",`)
	}
	if st != nil {
		size += len(`"rps_ch":"01234567","rps_pub":"","rps_seq":"18446744073709551615","rps_since":"-9223372036854775808",`) +
			len(st.publisher)
		if st.history {
			size += len(`"rps_epoch":"","rps_offset":"",`) + len(st.epoch)
		}
	}
	b := make([]byte, 0, size+size/16)

	b = append(b, `{"type":`...)
	b = appendJSONString(b, eventType)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"payload":`...)
	b = form.append(b, msg.Payload)
	if msg.UUID != "" {
		b = append(b, `,"uuid":`...)
		b = appendJSONString(b, msg.UUID)
	}
	if len(msg.Metadata) > 0 || st != nil {
		b = append(b, `,"metadata":{`...)
		var keysBuf [8]string
		seq := st != nil && st.sequenced()
		hist := st != nil && st.history
		for i, k := range stampedKeys(keysBuf[:0], msg.Metadata, st) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			switch {
			case seq && k == MetadataSequence:
				b = append(b, '"')
				b = strconv.AppendUint(b, st.seq, 10)
				b = append(b, '"')
			case seq && k == MetadataSince:
				b = append(b, '"')
				b = strconv.AppendInt(b, st.since, 10)
				b = append(b, '"')
			case seq && k == MetadataPublisher:
				b = appendJSONString(b, st.publisher)
			case seq && k == MetadataChannel:
				b = append(b, '"')
				b = appendChannelChecksum(b, st.channel)
				b = append(b, '"')
			case hist && k == MetadataEpoch:
				b = append(b, '"')
				b = append(b, st.epoch...)
				b = append(b, `","`+MetadataOffset+`":""`...) // the offset: the history script's
			default:
				b = appendJSONString(b, msg.Metadata[k])
			}
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// payloadForm is how the envelope writes a payload.
type payloadForm int

const (
	payloadNull       payloadForm = iota // empty: null
	payloadJSON                          // compact JSON: as it is
	payloadSpacedJSON                    // JSON with whitespace: compacted
	payloadBase64                        // anything else: a base64 string
)

// envelopePayloadForm says how the envelope writes payload. JSON is embedded
// only when the body stays within the decoder's depth limit.
func envelopePayloadForm(payload []byte) payloadForm {
	if len(payload) == 0 {
		return payloadNull
	}
	if !utf8.Valid(payload) {
		return payloadBase64
	}
	switch ok, hasSpace := checkJSON(payload, maxJSONDepth-1); {
	case !ok:
		return payloadBase64
	case hasSpace:
		return payloadSpacedJSON
	default:
		return payloadJSON
	}
}

// size returns at least the number of bytes that append adds for a payload
// of n bytes.
func (f payloadForm) size(n int) int {
	switch f {
	case payloadNull:
		return len("null")
	case payloadBase64:
		return len(`""`) + base64.StdEncoding.EncodedLen(n) + len(base64Encoding)
	default:
		return n
	}
}

// append appends payload to b in the form f: the "payload" value and, for
// base64, the "payload_encoding" member after it.
func (f payloadForm) append(b, payload []byte) []byte {
	switch f {
	case payloadNull:
		return append(b, "null"...)
	case payloadJSON:
		return append(b, payload...)
	case payloadSpacedJSON:
		return appendCompactJSON(b, payload)
	default:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, payload)
		b = append(b, '"')
		return append(b, base64Encoding...)
	}
}

// Unmarshal implements Marshaler.
func (JSONEnvelopeMarshaler) Unmarshal(_ string, body []byte) (*message.Message, error) {
	return unmarshalEnvelope(body, false, false)
}

func (JSONEnvelopeMarshaler) unmarshalUnstamped(_ string, body string) (*message.Message, error) {
	return unmarshalEnvelope(bytesOf(body), true, true)
}

// unmarshalEnvelope decodes body, leaving the stamp's metadata out when
// unstamped is set. It never modifies body; when owned is set, body is the
// caller's to give away and the payload shares its memory (capped, so that
// an append to the payload cannot write past it), else it retains nothing.
func unmarshalEnvelope(body []byte, unstamped, owned bool) (*message.Message, error) {
	if len(body) == 0 {
		return message.NewMessage(watermill.NewUUID(), nullPayload()), nil
	}
	if err := validateJSONBody(body); err != nil {
		return nil, err
	}

	i := skipJSONSpace(body, 0)
	switch body[i] {
	case '{':
	case 'n': // null: what graphql-yoga publishes for a null detail.
		return message.NewMessage(watermill.NewUUID(), nullPayload()), nil
	default:
		return nil, fmt.Errorf("%w: body is a JSON %s, want an object", ErrMalformedMessage, jsonKind(body[i]))
	}

	// The body is valid JSON, so the scan below only has to find where
	// members and values end; it never has to report a syntax error.
	var payload, encodingRaw, uuidRaw, metadataRaw []byte
	for i = skipJSONSpace(body, i+1); i < len(body) && body[i] == '"'; {
		keyEnd := endOfJSONString(body, i)
		key := body[i:keyEnd]
		i = skipJSONSpace(body, keyEnd)
		i = skipJSONSpace(body, i+1) // ':'
		valueEnd := endOfJSONValue(body, i)
		value := body[i:valueEnd]
		switch {
		case jsonStringEquals(key, "payload"):
			payload = value
		case jsonStringEquals(key, "payload_encoding"):
			encodingRaw = value
		case jsonStringEquals(key, "uuid"):
			uuidRaw = value
		case jsonStringEquals(key, "metadata"):
			metadataRaw = value
		}
		i = skipJSONSpace(body, valueEnd)
		if i < len(body) && body[i] == ',' {
			i = skipJSONSpace(body, i+1)
			continue
		}
		break // '}'
	}

	var uuid string
	switch {
	case len(uuidRaw) == 0 || uuidRaw[0] == 'n':
	case uuidRaw[0] == '"':
		uuid, _ = unquoteJSONString(string(uuidRaw))
	default:
		return nil, fmt.Errorf("%w: uuid is a JSON %s, want a string", ErrMalformedMessage, jsonKind(uuidRaw[0]))
	}
	if uuid == "" {
		uuid = watermill.NewUUID()
	}

	switch {
	case len(encodingRaw) == 0 || encodingRaw[0] == 'n':
		switch {
		case payload == nil:
			payload = nullPayload()
		case owned:
			payload = payload[:len(payload):len(payload)]
		default:
			payload = bytes.Clone(payload)
		}
	case jsonStringEquals(encodingRaw, "base64"):
		var err error
		if payload, err = decodeBase64Payload(payload); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf(`%w: payload_encoding is %.40s, want "base64" or null`, ErrMalformedMessage, encodingRaw)
	}
	msg := message.NewMessage(uuid, payload)

	if len(metadataRaw) == 0 || metadataRaw[0] == 'n' {
		return msg, nil
	}
	if metadataRaw[0] != '{' {
		return nil, fmt.Errorf("%w: metadata is a JSON %s, want an object", ErrMalformedMessage, jsonKind(metadataRaw[0]))
	}
	for j := skipJSONSpace(metadataRaw, 1); j < len(metadataRaw) && metadataRaw[j] == '"'; {
		keyEnd := endOfJSONString(metadataRaw, j)
		rawKey := metadataRaw[j:keyEnd]
		j = skipJSONSpace(metadataRaw, keyEnd)
		j = skipJSONSpace(metadataRaw, j+1) // ':'
		valueEnd := endOfJSONValue(metadataRaw, j)
		if metadataRaw[j] != '"' {
			key, _ := unquoteJSONString(string(rawKey))
			return nil, fmt.Errorf("%w: metadata value for key %q is a JSON %s, want a string",
				ErrMalformedMessage, key, jsonKind(metadataRaw[j]))
		}
		if !unstamped || !isStampKey(rawKey[1:len(rawKey)-1]) {
			key, _ := unquoteJSONString(string(rawKey))
			msg.Metadata[key], _ = unquoteJSONString(string(metadataRaw[j:valueEnd]))
		}
		j = skipJSONSpace(metadataRaw, valueEnd)
		if j < len(metadataRaw) && metadataRaw[j] == ',' {
			j = skipJSONSpace(metadataRaw, j+1)
			continue
		}
		break // '}'
	}
	return msg, nil
}

// decodeBase64Payload returns the bytes that the base64 "payload" value raw
// (raw JSON, nil when the member is missing) encodes.
func decodeBase64Payload(raw []byte) ([]byte, error) {
	if len(raw) == 0 || raw[0] != '"' {
		kind := "missing"
		if len(raw) > 0 {
			kind = "a JSON " + jsonKind(raw[0])
		}
		return nil, fmt.Errorf("%w: payload_encoding is base64 but payload is %s, want a string", ErrMalformedMessage, kind)
	}
	text := raw[1 : len(raw)-1]
	if bytes.IndexByte(text, '\\') >= 0 { // base64 needs no escapes, but a producer may write some
		s, _ := unquoteJSONString(string(raw))
		text = []byte(s)
	}
	payload := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(payload, text)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not valid base64: %v", ErrMalformedMessage, err)
	}
	return payload[:n], nil
}

// nullPayload returns a fresh payload holding the JSON null.
func nullPayload() message.Payload {
	return message.Payload("null")
}
