package redispubsub

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// maxJSONDepth is encoding/json's limit on nested arrays and objects: deeper
// text is invalid for json.Valid, and so for checkJSON with this limit. It
// bounds every body the JSON marshalers decode. The envelope adds one level
// around its payload, so a payload embedded in it may nest one level less.
const maxJSONDepth = 10000

// validateJSONBody returns an error wrapping ErrMalformedMessage unless body
// is a single valid JSON value, at most maxJSONDepth deep, encoded as valid
// UTF-8.
func validateJSONBody(body []byte) error {
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: body is not valid UTF-8", ErrMalformedMessage)
	}
	if ok, _ := checkJSON(body, maxJSONDepth); !ok {
		return fmt.Errorf("%w: body is not valid JSON: %v", ErrMalformedMessage, jsonSyntaxError(body))
	}
	return nil
}

// validateJSONPayload returns nil if payload is a single valid JSON value, at
// most maxJSONDepth deep, encoded as valid UTF-8, else an error saying what is
// wrong.
func validateJSONPayload(payload []byte) error {
	if !utf8.Valid(payload) {
		return errors.New("payload is not valid UTF-8")
	}
	if ok, _ := checkJSON(payload, maxJSONDepth); !ok {
		return jsonSyntaxError(payload)
	}
	return nil
}

// jsonSyntaxError returns encoding/json's description of what is wrong with
// the JSON text b, which checkJSON refused with the limit maxJSONDepth.
func jsonSyntaxError(b []byte) error {
	if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
		return err
	}
	return errors.New("invalid JSON") // unreachable: checkJSON agrees with json.Valid
}

// checkJSON reports whether b is exactly one JSON value (RFC 8259) with
// optional surrounding whitespace and arrays and objects nested at most
// maxDepth deep, and whether b has whitespace outside strings (so that
// compacting it would change it). With maxDepth = maxJSONDepth it accepts
// exactly what json.Valid accepts. Like json.Valid it does not check UTF-8.
// It is a direct recursive-descent check, several times faster than
// json.Valid's byte-at-a-time state machine.
func checkJSON(b []byte, maxDepth int) (valid, hasSpace bool) {
	c := jsonChecker{b: b, maxDepth: maxDepth}
	c.skipSpace()
	if !c.value() {
		return false, false
	}
	c.skipSpace()
	return c.i == len(c.b), c.space
}

type jsonChecker struct {
	b        []byte
	i        int
	depth    int
	maxDepth int
	space    bool // whitespace seen outside strings
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
	if c.depth++; c.depth > c.maxDepth {
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
		if more, ok := c.next('}'); !more {
			return ok
		}
	}
}

func (c *jsonChecker) array() bool {
	if c.depth++; c.depth > c.maxDepth {
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
		if more, ok := c.next(']'); !more {
			return ok
		}
	}
}

// next reads what follows a member or element of the object or array that
// closing ends: a ',' before the next one (more), or closing, which ends it
// (ok); anything else is invalid.
func (c *jsonChecker) next(closing byte) (more, ok bool) {
	c.skipSpace()
	if c.i >= len(c.b) {
		return false, false
	}
	switch c.b[c.i] {
	case ',':
		c.i++
		c.skipSpace()
		return true, true
	case closing:
		c.i++
		c.depth--
		return false, true
	default:
		return false, false
	}
}

// string checks the string starting at c.b[c.i] == '"'.
func (c *jsonChecker) string() bool {
	b := c.b
	for i := c.i + 1; i < len(b); i++ {
		// Eight bytes at a time while none is a quote, a backslash or a
		// control character: most of a long string.
		for i+8 <= len(b) && plainStringBytes(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
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

// plainStringBytes reports whether none of the eight bytes of w needs a
// look in a JSON string: no '"', no '\\' and nothing below 0x20 (the
// classic SWAR tests for a zero byte, and for a byte less than n).
func plainStringBytes(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) bool { return (v-ones)&^v&highs != 0 }
	return !hasZero(w^('"'*ones)) && !hasZero(w^('\\'*ones)) && (w-0x20*ones)&^w&highs == 0
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
