package redispubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

func TestSequenceTrackerFindsGapsAndDuplicates(t *testing.T) {
	tr := sequenceTracker{}
	for _, step := range []struct {
		seq          uint64
		verdict      sequenceVerdict
		firstMissing uint64
	}{
		{seq: 7, verdict: newStream},                  // joined mid-stream
		{seq: 8, verdict: inSequence},                 // in order
		{seq: 12, verdict: gapFound, firstMissing: 9}, // 9 to 11 missing
		{seq: 12, verdict: duplicate},                 // a retried pipeline
		{seq: 10, verdict: duplicate},                 // late: already counted
		{seq: 1, verdict: duplicate},                  // a retried first pipeline
		{seq: 13, verdict: inSequence},
	} {
		verdict, firstMissing := tr.observe("pub", "ch", step.seq)
		require.Equal(t, step.verdict, verdict, "seq %d", step.seq)
		require.Equal(t, step.firstMissing, firstMissing, "seq %d", step.seq)
	}
	verdict, _ := tr.observe("other", "ch", 5)
	require.Equal(t, newStream, verdict, "streams are per publisher")
}

func TestReadStampFromEveryStampingMarshaler(t *testing.T) {
	msg := message.NewMessage("uuid-1", []byte(`{"metadata":{"rps_pub":"fake","rps_seq":"99"}}`))
	msg.Metadata.Set("k", "v")
	for name, m := range map[string]Marshaler{"envelope": JSONEnvelopeMarshaler{}, "msgpack": MsgpackMarshaler{}} {
		t.Run(name, func(t *testing.T) {
			body, err := m.Marshal("t", stamped(msg, "pub-1", 42, 0))
			require.NoError(t, err)
			publisher, seq, ok := readStamp(m.(stampReader), string(body))
			require.True(t, ok)
			require.Equal(t, "pub-1", publisher, "the payload must not hide the real stamp")
			require.EqualValues(t, 42, seq)

			body, err = m.Marshal("t", msg)
			require.NoError(t, err)
			_, _, ok = readStamp(m.(stampReader), string(body))
			require.False(t, ok, "an unstamped message has no stamp, whatever its payload says")
		})
	}
	_, isStampReader := Marshaler(RawJSONMarshaler{}).(stampReader)
	require.False(t, isStampReader, "raw JSON carries no metadata")
}

// A payload may carry a stamp-shaped object (an audit log of bodies, say):
// only the envelope's own metadata counts, or the message could be dropped
// as a duplicate.
func TestReadStampIgnoresStampsInsidePayload(t *testing.T) {
	payload := `{"metadata":{"rps_pub":"P","rps_seq":"5"},"s":"\"metadata\":{\"}"}`
	for name, msg := range map[string]*message.Message{
		"no metadata":   message.NewMessage("u", []byte(payload)),
		"own metadata":  stamped(message.NewMessage("u", []byte(payload)), "real", 7, 0),
		"other members": message.NewMessage("u", []byte(`[{"metadata":{"rps_pub":"P","rps_seq":"5"}}]`)),
	} {
		body, err := JSONEnvelopeMarshaler{}.Marshal("t", msg)
		require.NoError(t, err)
		publisher, seq, ok := readStamp(JSONEnvelopeMarshaler{}, string(body))
		if name == "own metadata" {
			require.True(t, ok, name)
			require.Equal(t, "real", publisher)
			require.EqualValues(t, 7, seq)
			continue
		}
		require.False(t, ok, "%s: %s", name, body)
	}
}

func TestStampedDoesNotModifyTheMessage(t *testing.T) {
	msg := message.NewMessage("u", []byte(`1`))
	msg.Metadata.Set("k", "v")
	out := stamped(msg, "p", 3, 0)
	require.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	require.Equal(t, "3", out.Metadata.Get(MetadataSequence))
	require.Equal(t, "p", out.Metadata.Get(MetadataPublisher))
}

// readStamp is stampOf without the time: the stamp's identity.
func readStamp(r stampReader, body string) (publisher string, seq uint64, ok bool) {
	st, ok := r.stampOf(body)
	return st.publisher, st.seq, ok
}
