package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// tailEvent is one event as tail prints it. Its JSON form is one line of
// tail --json; the payload is in exactly one of payload (JSON, embedded),
// payload_text (a string that is not JSON) or payload_base64 (bytes).
type tailEvent struct {
	Time          time.Time         `json:"time"`
	Topic         string            `json:"topic"`
	Type          string            `json:"type"`
	ID            string            `json:"id"`
	UUID          string            `json:"uuid"`
	Metadata      map[string]string `json:"metadata"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadText   *string           `json:"payload_text,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
}

func newTailEvent(topic string, msg *message.Message, at time.Time) tailEvent {
	typ, id := redispubsub.SplitTopic(topic)
	e := tailEvent{Time: at, Topic: topic, Type: typ, ID: id, UUID: msg.UUID, Metadata: make(map[string]string)}
	for k, v := range msg.Metadata {
		if k != redispubsub.MetadataTopic { // that is Topic
			e.Metadata[k] = v
		}
	}
	switch p := msg.Payload; {
	case len(p) == 0:
		e.Payload = json.RawMessage("null")
	case json.Valid(p):
		var b bytes.Buffer
		_ = json.Compact(&b, p) // one line
		e.Payload = b.Bytes()
	case utf8.Valid(p) && !strings.ContainsFunc(string(p), unicode.IsControl):
		s := string(p)
		e.PayloadText = &s
	default:
		e.PayloadBase64 = p
	}
	return e
}

// line returns the event as one line, JSON or text:
//
//	15:04:05.000 call.responded:uuid-123 type=call.responded id=uuid-123 uuid=… metadata={"k":"v"} payload={"ok":true}
func (e tailEvent) line(asJSON bool) []byte {
	if asJSON {
		b, _ := json.Marshal(e) // nothing in it can fail
		return append(b, '\n')
	}
	metadata, _ := json.Marshal(e.Metadata) // sorted keys
	var b []byte
	b = e.Time.AppendFormat(b, "15:04:05.000")
	b = append(b, ' ')
	b = append(b, text(e.Topic)...)
	for _, f := range [][2]string{{"type", e.Type}, {"id", e.ID}, {"uuid", e.UUID}} {
		b = append(b, ' ')
		b = append(b, f[0]...)
		b = append(b, '=')
		b = append(b, text(f[1])...)
	}
	b = append(b, " metadata="...)
	b = append(b, metadata...)
	switch {
	case e.PayloadText != nil:
		b = strconv.AppendQuote(append(b, " payload_text="...), *e.PayloadText)
	case e.PayloadBase64 != nil:
		b = base64.StdEncoding.AppendEncode(append(b, " payload_base64="...), e.PayloadBase64)
	default:
		b = append(append(b, " payload="...), e.Payload...)
	}
	return append(b, '\n')
}

// text returns s as is, or quoted when it is empty or holds a space, a
// quote, '=' or a character that is not printable.
func text(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '=' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}
