package redispubsub

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// published returns the body the history script publishes for msg on
// topic at pos: the envelope, carrying the epoch, its offset written where
// it reserves it.
func published(t testing.TB, topic string, msg *message.Message, pos Position) string {
	body, err := marshal(JSONEnvelopeMarshaler{}, topic, msg, &stamp{history: true, epoch: pos.Epoch})
	require.NoError(t, err)
	return splice(t, body, pos.Epoch, strconv.FormatUint(pos.Offset, 10))
}

// A record decodes to the message that decoding the published envelope
// gives: what a Subscriber recovers is what it would have received live.
func TestRecordDecodesAsTheEnvelope(t *testing.T) {
	pos := Position{Offset: 42, Epoch: "0abcdefghijkl"}
	for name, msg := range map[string]*message.Message{
		"canonical UUID, JSON payload": message.NewMessage("0d9bc3c4-5a1e-4f4c-9d3a-6f1b2c3d4e5f", []byte(`{"a":1}`)),
		"upper-case UUID":              message.NewMessage("0D9BC3C4-5A1E-4F4C-9D3A-6F1B2C3D4E5F", []byte(`1`)),
		"UUID of another form":         message.NewMessage("order-17", []byte(`"text"`)),
		"UUID not UTF-8":               message.NewMessage("u\xff\xfe", []byte(`[]`)),
		"spaced JSON":                  message.NewMessage("u", []byte("{ \"a\" : [1, 2],\n \"b\": \"x y\" }")),
		"empty payload":                message.NewMessage("u", nil),
		"JSON null":                    message.NewMessage("u", []byte(`null`)),
		"binary payload":               message.NewMessage("u", []byte{0, 1, 0xff, '"'}),
		"text, not JSON":               message.NewMessage("u", []byte(`hello`)),
		"metadata": withMetadata(message.NewMessage("u", []byte(`{}`)),
			"k", "v", "quote\"d", "a\\b\n", "unicode ✓", "é", "bad\xff", "v\xc3", "", "empty key"),
		"keys equal once made valid UTF-8": withMetadata(message.NewMessage("u", []byte(`{}`)),
			"a\xff", "first", "a\xfe", "second", "a\xfd", "third"),
		"stamp and position keys set by the caller": withMetadata(message.NewMessage("u", []byte(`{}`)),
			MetadataPublisher, "p", MetadataSequence, "9", MetadataEpoch, "other", MetadataOffset, "1", "z", "last"),
	} {
		t.Run(name, func(t *testing.T) {
			live, err := unmarshal(JSONEnvelopeMarshaler{}, "topic", published(t, "topic", msg, pos))
			require.NoError(t, err)
			record := appendRecord(nil, msg, envelopePayloadForm(msg.Payload))
			recovered, err := decodeRecord(string(record), pos)
			require.NoError(t, err)
			assert.Equal(t, live.UUID, recovered.UUID)
			assert.Equal(t, live.Metadata, recovered.Metadata)
			assert.Equal(t, string(live.Payload), string(recovered.Payload))
			assert.Equal(t, pos, must(PositionOf(recovered)))
		})
	}
}

// An empty UUID gets a new one, as the envelope's decoder gives it.
func TestRecordWithoutUUID(t *testing.T) {
	msg, err := decodeRecord(string(appendRecord(nil, message.NewMessage("", []byte(`{}`)), payloadJSON)), Position{Offset: 1, Epoch: "e"})
	require.NoError(t, err)
	assert.Len(t, msg.UUID, 36)
}

// A canonical UUID is stored in 16 bytes: the record of the bench's
// message (256-byte payload) is 274 bytes.
func TestRecordSize(t *testing.T) {
	payload := []byte(`{"d":"` + string(bytes.Repeat([]byte("x"), 248)) + `"}`)
	record := appendRecord(nil, message.NewMessage("0d9bc3c4-5a1e-4f4c-9d3a-6f1b2c3d4e5f", payload), payloadJSON)
	assert.Len(t, record, 1+16+1+256)
}

// What the package did not write is refused with an error, never a panic.
func TestRecordRefusesWhatItDidNotWrite(t *testing.T) {
	for _, record := range []string{"", "\x00", "\x03abc", "\x02short", "\x01\x05ab", "\x01\x00\x05", "\x01\x00\x01\x03ab"} {
		_, err := decodeRecord(record, Position{Offset: 1, Epoch: "e"})
		require.ErrorIs(t, err, errBadRecord, "%q", record)
	}
}

func FuzzRecord(f *testing.F) {
	f.Add("0d9bc3c4-5a1e-4f4c-9d3a-6f1b2c3d4e5f", "k", "v", []byte(`{"a": 1}`))
	f.Add("", "", "", []byte{})
	f.Add("u\xff", "k\xfe", "v", []byte{0xff})
	f.Fuzz(func(t *testing.T, uuid, key, value string, payload []byte) {
		msg := message.NewMessage(uuid, payload)
		msg.Metadata.Set(key, value)
		// Any bytes decode or fail cleanly.
		_, _ = decodeRecord(string(payload), Position{Offset: 1, Epoch: "e"})
		pos := Position{Offset: 3, Epoch: "e"}
		record := appendRecord(nil, msg, envelopePayloadForm(payload))
		recovered, err := decodeRecord(string(record), pos)
		require.NoError(t, err)
		live, err := unmarshal(JSONEnvelopeMarshaler{}, "topic", published(t, "topic", msg, pos))
		require.NoError(t, err)
		if uuid != "" {
			assert.Equal(t, live.UUID, recovered.UUID)
		}
		assert.Equal(t, live.Metadata, recovered.Metadata)
		assert.Equal(t, string(live.Payload), string(recovered.Payload))
	})
}

func withMetadata(msg *message.Message, kv ...string) *message.Message {
	for i := 0; i < len(kv); i += 2 {
		msg.Metadata.Set(kv[i], kv[i+1])
	}
	return msg
}

func must[T any](v T, ok bool) T {
	if !ok {
		panic("not ok")
	}
	return v
}

// The bench's message: a canonical UUID and a 256-byte payload.
func BenchmarkRecord(b *testing.B) {
	payload := []byte(`{"d":"` + string(bytes.Repeat([]byte("x"), 248)) + `"}`)
	msg := message.NewMessage("0d9bc3c4-5a1e-4f4c-9d3a-6f1b2c3d4e5f", payload)
	record := string(appendRecord(nil, msg, payloadJSON))
	pos := Position{Offset: 12345, Epoch: "0abcdefghijkl"}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = appendRecord(buf[:0], msg, envelopePayloadForm(msg.Payload))
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeRecord(record, pos); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode envelope", func(b *testing.B) {
		b.ReportAllocs()
		body := published(b, "topic", msg, pos)
		for b.Loop() {
			if _, err := unmarshal(JSONEnvelopeMarshaler{}, "topic", body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
