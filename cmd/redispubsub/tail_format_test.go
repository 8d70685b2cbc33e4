package main

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// TestTailEventLine pins both forms of a line for each kind of payload.
func TestTailEventLine(t *testing.T) {
	at := time.Date(2025, 1, 2, 15, 4, 5, 6e6, time.UTC)
	for _, tc := range []struct {
		payload    string
		text, json string
	}{
		{"", `payload=null`, `"payload":null`},
		{"{\n  \"ok\": true\n}", `payload={"ok":true}`, `"payload":{"ok":true}`},
		{"plain text", `payload_text="plain text"`, `"payload_text":"plain text"`},
		{"\x00\x01\xff", `payload_base64=AAH/`, `"payload_base64":"AAH/"`},
	} {
		msg := message.NewMessage("u-1", []byte(tc.payload))
		msg.Metadata.Set(redispubsub.MetadataTopic, "call.responded:id 1")
		msg.Metadata.Set("k", "v")
		e := newTailEvent("call.responded:id 1", msg, at)
		require.Equal(t, `15:04:05.006 "call.responded:id 1" type=call.responded id="id 1" uuid=u-1 metadata={"k":"v"} `+tc.text+"\n", string(e.line(false)))
		require.Equal(t, `{"time":"2025-01-02T15:04:05.006Z","topic":"call.responded:id 1","type":"call.responded","id":"id 1","uuid":"u-1","metadata":{"k":"v"},`+tc.json+"}\n", string(e.line(true)))
	}
}
