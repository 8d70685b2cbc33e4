package redispubsub_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// benchPayload is a ~200-byte JSON payload, typical of an event.
const benchPayload = `{"callId":"3f1c9a2e-7b4d-4e8a-9c6f-1d2e3f4a5b6c","status":"completed",` +
	`"result":{"items":[{"id":1,"name":"alpha","tags":["a","b"]},{"id":2,"name":"beta","tags":[]}],` +
	`"total":2},"durationMs":12.5,"retry":false}`

const benchTopic = "call.responded:uuid-123"

func benchMessage() *message.Message {
	msg := message.NewMessage("8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f", message.Payload(benchPayload))
	msg.Metadata.Set("correlation_id", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e")
	msg.Metadata.Set("origin", "billing")
	return msg
}

// naiveEnvelope is the obvious encoding/json version of the envelope, the
// baseline the hand-written JSONEnvelopeMarshaler is measured against. It
// escapes <, > and & (json.Marshal does) and matches member names without
// regard to case (json.Unmarshal does), so it is not wire-identical.
type naiveEnvelope struct {
	Type     string            `json:"type"`
	ID       string            `json:"id,omitempty"`
	Payload  json.RawMessage   `json:"payload"`
	UUID     string            `json:"uuid,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func naiveMarshal(topic string, msg *message.Message) ([]byte, error) {
	eventType, id := redispubsub.SplitTopic(topic)
	return json.Marshal(naiveEnvelope{
		Type: eventType, ID: id, Payload: json.RawMessage(msg.Payload), UUID: msg.UUID, Metadata: msg.Metadata,
	})
}

func naiveUnmarshal(_ string, body []byte) (*message.Message, error) {
	var env naiveEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	if env.UUID == "" {
		env.UUID = watermill.NewUUID()
	}
	msg := message.NewMessage(env.UUID, message.Payload(env.Payload))
	for k, v := range env.Metadata {
		msg.Metadata[k] = v
	}
	return msg, nil
}

type benchCodec struct {
	name      string
	marshal   func(string, *message.Message) ([]byte, error)
	unmarshal func(string, []byte) (*message.Message, error)
}

func benchMarshal(b *testing.B, codecs ...benchCodec) {
	msg := benchMessage()
	for _, c := range codecs {
		b.Run(c.name, func(b *testing.B) {
			body, err := c.marshal(benchTopic, msg)
			require.NoError(b, err)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.marshal(benchTopic, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchUnmarshal(b *testing.B, codecs ...benchCodec) {
	for _, c := range codecs {
		b.Run(c.name, func(b *testing.B) {
			body, err := c.marshal(benchTopic, benchMessage())
			require.NoError(b, err)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.unmarshal(benchTopic, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var (
	envelopeCodec = benchCodec{"envelope", redispubsub.JSONEnvelopeMarshaler{}.Marshal, redispubsub.JSONEnvelopeMarshaler{}.Unmarshal}
	naiveCodec    = benchCodec{"naive_encoding_json", naiveMarshal, naiveUnmarshal}
)

func BenchmarkJSONEnvelopeMarshal(b *testing.B)   { benchMarshal(b, envelopeCodec, naiveCodec) }
func BenchmarkJSONEnvelopeUnmarshal(b *testing.B) { benchUnmarshal(b, envelopeCodec, naiveCodec) }

func BenchmarkRawJSONMarshal(b *testing.B) {
	benchMarshal(b, benchCodec{"rawjson", redispubsub.RawJSONMarshaler{}.Marshal, redispubsub.RawJSONMarshaler{}.Unmarshal})
}

func BenchmarkRawJSONUnmarshal(b *testing.B) {
	benchUnmarshal(b, benchCodec{"rawjson", redispubsub.RawJSONMarshaler{}.Marshal, redispubsub.RawJSONMarshaler{}.Unmarshal})
}

func BenchmarkMsgpackMarshal(b *testing.B) {
	benchMarshal(b, benchCodec{"msgpack", redispubsub.MsgpackMarshaler{}.Marshal, redispubsub.MsgpackMarshaler{}.Unmarshal})
}

func BenchmarkMsgpackUnmarshal(b *testing.B) {
	benchUnmarshal(b, benchCodec{"msgpack", redispubsub.MsgpackMarshaler{}.Marshal, redispubsub.MsgpackMarshaler{}.Unmarshal})
}

// TestNaiveEnvelopeDiffersOnlyInHTMLEscaping documents why the naive
// baseline is not the implementation: for the benchmark message both agree,
// but encoding/json escapes HTML characters where JSON.stringify does not.
func TestNaiveEnvelopeDiffersOnlyInHTMLEscaping(t *testing.T) {
	msg := benchMessage()
	ours, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal(benchTopic, msg)
	require.NoError(t, err)
	naive, err := naiveMarshal(benchTopic, msg)
	require.NoError(t, err)
	require.Equal(t, string(ours), string(naive))

	msg.Metadata.Set("html", "a<b")
	ours, err = redispubsub.JSONEnvelopeMarshaler{}.Marshal(benchTopic, msg)
	require.NoError(t, err)
	naive, err = naiveMarshal(benchTopic, msg)
	require.NoError(t, err)
	require.Contains(t, string(ours), `"a<b"`)
	require.Contains(t, string(naive), `"a\u003cb"`)
}

// BenchmarkJSONEnvelopeMarshalPayloads encodes the benchmark message with its
// payload in the shapes the envelope treats differently: compact JSON
// (embedded as is), indented JSON (compacted) and bytes that are not JSON
// (base64).
func BenchmarkJSONEnvelopeMarshalPayloads(b *testing.B) {
	var indented bytes.Buffer
	require.NoError(b, json.Indent(&indented, []byte(benchPayload), "", "  "))
	binary := make([]byte, len(benchPayload))
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	type payloadCase struct {
		name    string
		payload []byte
	}
	cases := []payloadCase{
		{"compact", []byte(benchPayload)},
		{"indented", indented.Bytes()},
		{"binary", binary},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			msg := benchMessage()
			msg.Payload = c.payload
			var m redispubsub.JSONEnvelopeMarshaler
			body, err := m.Marshal(benchTopic, msg)
			if err != nil {
				b.Skip(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Marshal(benchTopic, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
