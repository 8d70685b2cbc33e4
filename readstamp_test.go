package redispubsub

import (
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// stampReaders are the marshalers whose bodies carry the sequence stamp.
var stampReaders = map[string]Marshaler{"envelope": JSONEnvelopeMarshaler{}, "msgpack": MsgpackMarshaler{}}

// The envelope's stamp reader finds the stamp in any body that Unmarshal
// decodes to the same stamp, and never one that Unmarshal does not see.
func TestEnvelopeReadStampAgreesWithUnmarshal(t *testing.T) {
	for _, c := range []struct {
		name, body string
		publisher  string // "" = no stamp found
		seq        uint64
	}{
		{"canonical", `{"type":"t","payload":1,"metadata":{"k":"v","rps_pub":"P","rps_seq":"3"}}`, "P", 3},
		{"base64 payload", `{"type":"t","payload":"eA==","payload_encoding":"base64","metadata":{"rps_pub":"P","rps_seq":"3"}}`, "P", 3},
		{"repeated key: the last counts", `{"metadata":{"rps_pub":"A","rps_seq":"1","rps_pub":"B","rps_seq":"2"}}`, "B", 2},
		{"escaped key", `{"metadata":{"rps_pub":"A","rps_seq":"1","rps\u005fpub":"B"}}`, "B", 1},
		{"escaped value", `{"metadata":{"rps_pub":"\u0041","rps_seq":"1\u0030"}}`, "A", 10},
		{"other keys around", `{"metadata":{"a":"x\"rps_pub\":\"F\"","rps_pub":"P","z":"\\","rps_seq":"9"}}`, "P", 9},
		{"no sequence", `{"metadata":{"rps_pub":"P"}}`, "", 0},
		{"no publisher", `{"metadata":{"rps_seq":"1"}}`, "", 0},
		{"empty publisher", `{"metadata":{"rps_pub":"","rps_seq":"1"}}`, "", 0},
		{"sequence zero", `{"metadata":{"rps_pub":"P","rps_seq":"0"}}`, "", 0},
		{"sequence not a number", `{"metadata":{"rps_pub":"P","rps_seq":"x1"}}`, "", 0},
		{"empty metadata", `{"metadata":{}}`, "", 0},
		{"metadata not last", `{"metadata":{"rps_pub":"P","rps_seq":"1"},"uuid":"u"}`, "", 0},
		{"stamp inside payload only", `{"payload":{"metadata":{"rps_pub":"P","rps_seq":"1"}}}`, "", 0},
		{"whitespace: missed, never misread", `{"metadata":{ "rps_pub" : "P" , "rps_seq":"1" } }`, "", 0},
		{"non-string value: the body does not decode", `{"metadata":{"rps_pub":"P","rps_seq":1}}`, "", 0},
		{"trailing comma: the body does not decode", `{"metadata":{"rps_pub":"P","rps_seq":"1",}}`, "", 0},
		{"bad escape: the body does not decode", `{"metadata":{"rps_pub":"\x","rps_seq":"1"}}`, "", 0},
		{"channel checksum", `{"metadata":{"rps_ch":"0123abcd","rps_pub":"P","rps_seq":"4"}}`, "P", 4},
		{"channel checksum not one: for no known channel", `{"metadata":{"rps_ch":"0123ABCD","rps_pub":"P","rps_seq":"4"}}`, "", 0},
		{"channel checksum too short", `{"metadata":{"rps_ch":"123abcd","rps_pub":"P","rps_seq":"4"}}`, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			publisher, seq, ok := readStamp(JSONEnvelopeMarshaler{}, c.body)
			require.Equal(t, c.publisher != "", ok)
			require.Equal(t, c.publisher, publisher)
			require.Equal(t, c.seq, seq)
			if ok {
				msg, err := JSONEnvelopeMarshaler{}.Unmarshal("t", []byte(c.body))
				require.NoError(t, err)
				require.Equal(t, c.publisher, msg.Metadata.Get(MetadataPublisher))
			}
		})
	}
}

// FuzzReadStamp checks that the stamp readers never panic, and that a stamp
// they report is the one Unmarshal finds in the metadata (a body that
// Unmarshal refuses has no metadata to compare with: the Subscriber counts
// it as a decode failure). A stamp in a body as Marshal writes it is always
// found.
func FuzzReadStamp(f *testing.F) {
	msg := message.NewMessage("u-1", []byte(`{"metadata":{"rps_pub":"fake","rps_seq":"9"}}`))
	msg.Metadata.Set("k", "v")
	for _, m := range stampReaders {
		for _, payload := range []string{`{"a":1}`, "x", ""} {
			msg := msg.Copy()
			msg.Payload = []byte(payload)
			body, err := m.Marshal("t:id", stamped(msg, stamp{
				publisher: "dP6DdXXZR6ya6JcxqLn54V", seq: 42, since: 1796055553462, channel: channelChecksum("t:id"), scoped: true,
			}))
			require.NoError(f, err)
			f.Add(body)
		}
	}
	for _, body := range []string{
		`{"metadata":{"rps_pub":"A","rps_seq":"1","rps_pub":"B","rps_seq":"2"}}`,
		`{"metadata":{"rps_pub":"A","rps_seq":"1","rps\u005fpub":"B"}}`,
		`{"metadata":{"rps_pub":"\u0041","rps_seq":"1\u0030"}}`,
		`x"metadata":{"rps_pub":"P","rps_seq":"1"}}`,
		`"metadata":{"rps_pub":"P","rps_seq":"1"`,
		`"metadata":{"`, `"metadata":{}}`, `"metadata":{"\`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for name, m := range stampReaders {
			publisher, seq, ok := readStamp(m.(stampReader), string(body))
			msg, err := m.Unmarshal("t", body)
			if ok {
				require.NotEmpty(t, publisher, name)
				require.NotZero(t, seq, name)
				if err == nil {
					require.Equal(t, msg.Metadata.Get(MetadataPublisher), publisher, "%s: %q", name, body)
					decoded, err := strconv.ParseUint(msg.Metadata.Get(MetadataSequence), 10, 64)
					require.NoError(t, err, "%s: %q", name, body)
					require.Equal(t, decoded, seq, "%s: %q", name, body)
				}
			}
			if err != nil {
				continue
			}
			// Marshal writes the decoded stamp where the reader finds it.
			wantPublisher := msg.Metadata.Get(MetadataPublisher)
			wantSeq, err := strconv.ParseUint(msg.Metadata.Get(MetadataSequence), 10, 64)
			if wantPublisher == "" || err != nil || wantSeq == 0 {
				continue
			}
			if sum, ok := msg.Metadata[MetadataChannel]; ok {
				if _, ok := parseChannelChecksum(sum); !ok {
					continue // a stamp for no known channel is no stamp
				}
			}
			canonical, err := m.Marshal("t", msg)
			require.NoError(t, err)
			publisher, seq, ok = readStamp(m.(stampReader), string(canonical))
			require.True(t, ok, "%s: no stamp found in %q", name, canonical)
			require.Equal(t, wantPublisher, publisher, name)
			require.Equal(t, wantSeq, seq, name)
		}
	})
}

// BenchmarkReadStamp reads the stamp of a typical stamped envelope: the
// Subscriber's reader does it for every message it reads.
func BenchmarkReadStamp(b *testing.B) {
	msg := message.NewMessage("8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f",
		[]byte(`{"callId":"3f1c9a2e","status":"completed","result":{"items":[1,2,3]},"retry":false}`))
	msg.Metadata.Set("correlation_id", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e")
	for name, m := range stampReaders {
		b.Run(name, func(b *testing.B) {
			body, err := m.Marshal("t", stamped(msg, stamp{
				publisher: "dP6DdXXZR6ya6JcxqLn54V", seq: 12345, since: 1796055553462, channel: channelChecksum("t"), scoped: true,
			}))
			require.NoError(b, err)
			s := string(body)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := readStamp(m.(stampReader), s); !ok {
					b.Fatal("no stamp")
				}
			}
		})
	}
}
