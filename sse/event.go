package sse

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// The names of the events the Handler sends on its own. They start with
// "rps.", which no event type of the application should.
const (
	// EventLost is sent first on a stream that was asked to resume after a
	// Last-Event-ID and cannot: the events since then may be missing. Its
	// data is {"lastEventId":"<the id>","reason":"<why>"}. Live events
	// follow.
	EventLost = "rps.lost"
	// EventEnd is the last event of a stream that the server ends: its data
	// is {"reason":"<why>"}, the reason being ReasonSlow, ReasonShutdown or
	// ReasonSubscriberClosed. A browser's EventSource reconnects after it
	// unless the page calls close() on it.
	EventEnd = "rps.end"
)

// The reasons of EventEnd.
const (
	// ReasonSlow: the client fell Config.Buffer events behind, or a write
	// took longer than Config.WriteTimeout. Sent only when it can still be
	// written.
	ReasonSlow = "slow client"
	// ReasonShutdown: Handler.Close (http.Server.Shutdown, when registered
	// with RegisterOnShutdown).
	ReasonShutdown = "server shutdown"
	// ReasonSubscriberClosed: the Subscriber closed a subscription of the
	// stream (it was closed, or ended the subscription on its own).
	ReasonSubscriberClosed = "subscriber closed"
)

// heartbeat is the comment that keeps an idle stream open.
var heartbeat = []byte(": ping\n\n")

// envelope is the marshaler whose body a stream's data carries: what a
// TypeScript listener of the Redis event target receives as detail.
var envelope redispubsub.JSONEnvelopeMarshaler

// messageEvent returns the event of msg, received on topic: named by the
// envelope's type, its id msg's recovery position (none without one), its
// data the JSON envelope of msg.
func messageEvent(topic string, msg *message.Message) []byte {
	body, _ := envelope.Marshal(topic, msg) // fails only for a nil message
	typ, _ := redispubsub.SplitTopic(topic)
	var id string
	if pos, ok := redispubsub.PositionOf(msg); ok {
		id = pos.String()
	}
	return appendEvent(make([]byte, 0, len(body)+len(typ)+len(id)+32), typ, id, body)
}

// noticeEvent returns an event of the handler's own (EventLost, EventEnd)
// whose data is the JSON object of fields.
func noticeEvent(name string, fields map[string]string) []byte {
	data, _ := json.Marshal(fields) // a map of strings always encodes
	return appendEvent(nil, name, "", data)
}

// appendEvent appends one event in the text/event-stream format: the event
// line, the id line when id is valid as one (non-empty; no CR, LF or NUL,
// which EventSource would refuse), and one data line per line of data.
func appendEvent(b []byte, name, id string, data []byte) []byte {
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, '\n')
	if id != "" && !strings.ContainsAny(id, "\r\n\x00") {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	// A JSON envelope is one line; any other data is split where
	// EventSource splits lines (CRLF, CR, LF) and joined back by it with LF.
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		b = append(b, "data: "...)
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	b = append(b, "data: "...)
	b = append(b, data...)
	return append(b, '\n', '\n')
}

// validTopic reports whether topic can be streamed: a valid event type (see
// redispubsub.Topic) and no character that would break the event line.
func validTopic(topic string) error {
	if strings.ContainsAny(topic, "\r\n\x00") {
		return errLineBreak
	}
	_, err := redispubsub.Topic(redispubsub.SplitTopic(topic))
	return err
}
