package redispubsub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// JSONEnvelopeMarshaler is the default Marshaler. Its body is a compact JSON
// object, wire-compatible with the TypeScript Redis event targets, with its
// keys in this order:
//
//	{"type":"call.responded","id":"uuid-123","payload":{"ok":true},"uuid":"<watermill uuid>","metadata":{"k":"v"}}
//
// Marshal guarantees:
//
//   - type and id are the topic split at its first ':' (see SplitTopic);
//     "type" is always present.
//   - "id" is omitted when the topic has no id (it is never "id":""). This is
//     the body a TypeScript peer publishes for the same event: it dispatches
//     detail {type, id, payload} with an undefined id, and JSON.stringify drops
//     undefined properties.
//   - "payload" is the message payload embedded as JSON, compacted (insignificant
//     whitespace removed) but otherwise byte for byte as given: it is not
//     re-serialised, so numbers, escapes and key order stay as the publisher
//     wrote them. An empty payload is null. A payload that is not valid UTF-8
//     JSON is refused with an error wrapping ErrPayloadNotJSON.
//   - "uuid" is omitted when the message UUID is empty, "metadata" when the
//     message has no metadata. Metadata keys are written in sorted order.
//   - Strings are escaped as JavaScript's JSON.stringify escapes them: only
//     '"', '\\' and control characters below U+0020 (as \b \t \n \f \r or
//     \u00XX); '<', '>', '&', U+2028 and U+2029 are written as themselves.
//     Invalid UTF-8 in the topic, UUID or metadata is written as U+FFFD.
//
// So for a topic and message whose payload is compact JSON as JSON.stringify
// writes it, the body equals byte for byte what JSON.stringify gives for
// {type, id, payload, uuid, metadata} with the same (sorted) metadata.
//
// Unmarshal accepts what a TypeScript peer sends:
//
//   - an empty body, or the body null (what graphql-yoga publishes for an
//     undefined or null detail): the payload is null;
//   - a missing "payload" is null; otherwise the message payload is a copy
//     of the raw JSON text of "payload" (with the body's whitespace inside it,
//     if any), never a re-serialisation;
//   - a missing, null or empty "uuid" gets a fresh watermill.NewUUID();
//   - a missing or null "metadata" gives empty metadata;
//   - "type", "id" and unknown members are ignored: the channel, not the body,
//     is authoritative for the topic;
//   - member names are matched exactly (case-sensitive) and, as in
//     JavaScript's JSON.parse, a repeated member replaces the earlier one.
//
// It returns an error wrapping ErrMalformedMessage, saying what was wrong,
// when the body is not valid UTF-8 JSON, is not an object (or null), "uuid" is
// not a string, "metadata" is not an object, or a metadata value is not a
// string (also one that a later member of the same name would replace).
//
// The zero value is ready to use and safe for concurrent use.
type JSONEnvelopeMarshaler struct{}

// Marshal implements Marshaler.
func (JSONEnvelopeMarshaler) Marshal(topic string, msg *message.Message) ([]byte, error) {
	if msg == nil {
		return nil, errNilMessage
	}
	eventType, id := SplitTopic(topic)

	size := len(`{"type":"","id":"","payload":,"uuid":"","metadata":{}}`) +
		len(eventType) + len(id) + len(msg.Payload) + len(msg.UUID) + len("null")
	for k, v := range msg.Metadata {
		size += len(k) + len(v) + len(`"":"",`)
	}
	b := make([]byte, 0, size+size/16)

	b = append(b, `{"type":`...)
	b = appendJSONString(b, eventType)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"payload":`...)
	b, err := appendJSONPayload(b, msg.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w (message %q: %v)", ErrPayloadNotJSON, msg.UUID, err)
	}
	if msg.UUID != "" {
		b = append(b, `,"uuid":`...)
		b = appendJSONString(b, msg.UUID)
	}
	if len(msg.Metadata) > 0 {
		b = append(b, `,"metadata":{`...)
		var keysBuf [8]string
		for i, k := range appendSortedMetadataKeys(keysBuf[:0], msg.Metadata) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, msg.Metadata[k])
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// Unmarshal implements Marshaler.
func (JSONEnvelopeMarshaler) Unmarshal(_ string, body []byte) (*message.Message, error) {
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
	var payload, uuidRaw, metadataRaw []byte
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
		uuid = unquoteJSONString(uuidRaw)
	default:
		return nil, fmt.Errorf("%w: uuid is a JSON %s, want a string", ErrMalformedMessage, jsonKind(uuidRaw[0]))
	}
	if uuid == "" {
		uuid = watermill.NewUUID()
	}

	if payload == nil {
		payload = nullPayload()
	} else {
		payload = bytes.Clone(payload)
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
		key := unquoteJSONString(metadataRaw[j:keyEnd])
		j = skipJSONSpace(metadataRaw, keyEnd)
		j = skipJSONSpace(metadataRaw, j+1) // ':'
		valueEnd := endOfJSONValue(metadataRaw, j)
		if metadataRaw[j] != '"' {
			return nil, fmt.Errorf("%w: metadata value for key %q is a JSON %s, want a string",
				ErrMalformedMessage, key, jsonKind(metadataRaw[j]))
		}
		msg.Metadata[key] = unquoteJSONString(metadataRaw[j:valueEnd])
		j = skipJSONSpace(metadataRaw, valueEnd)
		if j < len(metadataRaw) && metadataRaw[j] == ',' {
			j = skipJSONSpace(metadataRaw, j+1)
			continue
		}
		break // '}'
	}
	return msg, nil
}

// nullPayload returns a fresh payload holding the JSON null.
func nullPayload() message.Payload {
	return message.Payload("null")
}

// validateJSONBody returns an error wrapping ErrMalformedMessage unless body
// is a single valid JSON value encoded as valid UTF-8.
func validateJSONBody(body []byte) error {
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: body is not valid UTF-8", ErrMalformedMessage)
	}
	if ok, _ := checkJSON(body); !ok {
		return fmt.Errorf("%w: body is not valid JSON: %v", ErrMalformedMessage, jsonSyntaxError(body))
	}
	return nil
}

// validateJSONPayload returns nil if payload is a single valid JSON value
// encoded as valid UTF-8, else an error saying what is wrong.
func validateJSONPayload(payload []byte) error {
	if !utf8.Valid(payload) {
		return errors.New("payload is not valid UTF-8")
	}
	if ok, _ := checkJSON(payload); !ok {
		return jsonSyntaxError(payload)
	}
	return nil
}

// jsonSyntaxError returns encoding/json's description of what is wrong with
// the invalid JSON text b. It is only called once b is known to be invalid.
func jsonSyntaxError(b []byte) error {
	if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
		return err
	}
	return errors.New("invalid JSON") // unreachable: checkJSON agrees with json.Valid
}

// appendJSONPayload appends payload to b as a compact JSON value, or null when
// payload is empty. It fails when payload is not valid UTF-8 JSON.
func appendJSONPayload(b, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return append(b, "null"...), nil
	}
	if !utf8.Valid(payload) {
		return nil, errors.New("payload is not valid UTF-8")
	}
	ok, hasSpace := checkJSON(payload)
	if !ok {
		return nil, jsonSyntaxError(payload)
	}
	if !hasSpace {
		return append(b, payload...), nil
	}
	return appendCompactJSON(b, payload), nil
}

// appendCompactJSON appends the valid JSON text src to dst without the
// whitespace outside its strings, as json.Compact does.
func appendCompactJSON(dst, src []byte) []byte {
	inString := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			dst = append(dst, c)
			switch c {
			case '\\':
				if i+1 < len(src) {
					i++
					dst = append(dst, src[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inString = true
		}
		dst = append(dst, c)
	}
	return dst
}

// maxJSONDepth is encoding/json's limit on nested arrays and objects; deeper
// text is invalid for json.Valid, and so for checkJSON.
const maxJSONDepth = 10000

// checkJSON reports whether b is exactly one JSON value (RFC 8259) with
// optional surrounding whitespace, accepting exactly what json.Valid accepts,
// and whether b has whitespace outside strings (so that compacting it would
// change it). Like json.Valid it does not check UTF-8. It is a direct
// recursive-descent check, several times faster than json.Valid's
// byte-at-a-time state machine.
func checkJSON(b []byte) (valid, hasSpace bool) {
	c := jsonChecker{b: b}
	c.skipSpace()
	if !c.value() {
		return false, false
	}
	c.skipSpace()
	return c.i == len(c.b), c.space
}

type jsonChecker struct {
	b     []byte
	i     int
	depth int
	space bool // whitespace seen outside strings
}

func (c *jsonChecker) skipSpace() {
	if c.i < len(c.b) && c.b[c.i] > ' ' {
		return // the common case in compact JSON
	}
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
			c.space = true
		default:
			return
		}
	}
}

func (c *jsonChecker) value() bool {
	if c.i >= len(c.b) {
		return false
	}
	switch c.b[c.i] {
	case '{':
		return c.object()
	case '[':
		return c.array()
	case '"':
		return c.string()
	case 't':
		return c.literal("true")
	case 'f':
		return c.literal("false")
	case 'n':
		return c.literal("null")
	default:
		return c.number()
	}
}

func (c *jsonChecker) object() bool {
	if c.depth++; c.depth > maxJSONDepth {
		return false
	}
	c.i++ // '{'
	c.skipSpace()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		c.depth--
		return true
	}
	for {
		if c.i >= len(c.b) || c.b[c.i] != '"' || !c.string() {
			return false
		}
		c.skipSpace()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			return false
		}
		c.i++
		c.skipSpace()
		if !c.value() {
			return false
		}
		c.skipSpace()
		if c.i >= len(c.b) {
			return false
		}
		switch c.b[c.i] {
		case ',':
			c.i++
			c.skipSpace()
		case '}':
			c.i++
			c.depth--
			return true
		default:
			return false
		}
	}
}

func (c *jsonChecker) array() bool {
	if c.depth++; c.depth > maxJSONDepth {
		return false
	}
	c.i++ // '['
	c.skipSpace()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
		c.depth--
		return true
	}
	for {
		if !c.value() {
			return false
		}
		c.skipSpace()
		if c.i >= len(c.b) {
			return false
		}
		switch c.b[c.i] {
		case ',':
			c.i++
			c.skipSpace()
		case ']':
			c.i++
			c.depth--
			return true
		default:
			return false
		}
	}
}

// string checks the string starting at c.b[c.i] == '"'.
func (c *jsonChecker) string() bool {
	b := c.b
	for i := c.i + 1; i < len(b); i++ {
		switch ch := b[i]; {
		case ch == '"':
			c.i = i + 1
			return true
		case ch < 0x20:
			return false
		case ch == '\\':
			i++
			if i >= len(b) {
				return false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return false
				}
				i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (c *jsonChecker) literal(lit string) bool {
	if !bytes.HasPrefix(c.b[c.i:], []byte(lit)) {
		return false
	}
	c.i += len(lit)
	return true
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at c.b[c.i].
// What follows the number is for the caller to check.
func (c *jsonChecker) number() bool {
	b, i := c.b, c.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		start := i + 1
		if i = skipDigits(b, start); i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		if i = skipDigits(b, start); i == start {
			return false
		}
	}
	c.i = i
	return true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// appendSortedMetadataKeys appends the keys of md to keys and sorts them in
// increasing order.
func appendSortedMetadataKeys(keys []string, md message.Metadata) []string {
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

const lowerHex = "0123456789abcdef"

// appendJSONString appends s to b as a JSON string escaped exactly as
// JavaScript's JSON.stringify escapes a string: '"' and '\\' are
// backslash-escaped, control characters below U+0020 are written as \b, \t,
// \n, \f, \r or \u00xx (lowercase hex), everything else as itself (no HTML
// escaping, no escaping of U+2028 or U+2029). Each byte of s that is not part
// of a valid UTF-8 sequence is written as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\t':
				b = append(b, '\\', 't')
			case '\n':
				b = append(b, '\\', 'n')
			case '\f':
				b = append(b, '\\', 'f')
			case '\r':
				b = append(b, '\\', 'r')
			default:
				b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// The helpers below scan JSON that checkJSON accepted. They never report
// syntax errors and stop at len(b) rather than index past it.

// skipJSONSpace returns the index of the first non-whitespace byte of b at or
// after i, or len(b).
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// jsonText is what the scanning helpers below read: a body as bytes, or as
// the string go-redis hands the Subscriber's reader.
type jsonText interface{ ~string | ~[]byte }

// endOfJSONString returns the index just past the closing quote of the string
// that starts at b[i] == '"'.
func endOfJSONString[T jsonText](b T, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// endOfJSONValue returns the index just past the value that starts at b[i].
func endOfJSONValue[T jsonText](b T, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return endOfJSONString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = endOfJSONString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}

// jsonStringEquals reports whether the JSON string literal raw (quotes
// included) denotes s.
func jsonStringEquals(raw []byte, s string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return len(raw) == len(s)+2 && string(raw[1:len(raw)-1]) == s
	}
	return unquoteJSONString(raw) == s
}

// unquoteJSONString returns the string denoted by the valid JSON string
// literal raw (quotes included). Lone surrogate escapes become U+FFFD.
func unquoteJSONString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		// Unreachable for a literal that checkJSON accepted.
		return string(raw[1 : len(raw)-1])
	}
	return s
}

// jsonKind names the kind of the JSON value whose first byte is c.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
