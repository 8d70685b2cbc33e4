package redispubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

func TestSequenceTrackerFindsGaps(t *testing.T) {
	tr := sequenceTracker{}
	type step struct {
		seq         uint64
		first, last uint64
		gap         bool
	}
	for _, s := range []step{
		{seq: 7},                                 // joined mid-stream
		{seq: 8},                                 // in order
		{seq: 12, first: 9, last: 11, gap: true}, // three missing
		{seq: 12},                                // duplicate
		{seq: 10},                                // late: already counted, ignored
		{seq: 1},                                 // restarted sequence
		{seq: 2},
	} {
		first, last, gap := tr.observe("pub", "ch", s.seq)
		require.Equal(t, s.gap, gap, "seq %d", s.seq)
		require.Equal(t, s.first, first, "seq %d", s.seq)
		require.Equal(t, s.last, last, "seq %d", s.seq)
	}
	_, _, gap := tr.observe("other", "ch", 5)
	require.False(t, gap, "streams are per publisher")
}

func TestReadStampFromEveryStampingMarshaler(t *testing.T) {
	msg := message.NewMessage("uuid-1", []byte(`{"metadata":{"rps_pub":"fake","rps_seq":"99"}}`))
	msg.Metadata.Set("k", "v")
	for name, m := range map[string]Marshaler{"envelope": JSONEnvelopeMarshaler{}, "msgpack": MsgpackMarshaler{}} {
		t.Run(name, func(t *testing.T) {
			body, err := m.Marshal("t", stamped(msg, "pub-1", 42))
			require.NoError(t, err)
			publisher, seq, ok := m.(stampReader).readStamp(string(body))
			require.True(t, ok)
			require.Equal(t, "pub-1", publisher, "the payload must not hide the real stamp")
			require.EqualValues(t, 42, seq)

			body, err = m.Marshal("t", msg)
			require.NoError(t, err)
			_, _, ok = m.(stampReader).readStamp(string(body))
			require.False(t, ok, "an unstamped message has no stamp, whatever its payload says")
		})
	}
	_, isStampReader := Marshaler(RawJSONMarshaler{}).(stampReader)
	require.False(t, isStampReader, "raw JSON carries no metadata")
}

func TestStampedDoesNotModifyTheMessage(t *testing.T) {
	msg := message.NewMessage("u", []byte(`1`))
	msg.Metadata.Set("k", "v")
	out := stamped(msg, "p", 3)
	require.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	require.Equal(t, "3", out.Metadata.Get(MetadataSequence))
	require.Equal(t, "p", out.Metadata.Get(MetadataPublisher))
}
