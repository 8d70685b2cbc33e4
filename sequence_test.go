package redispubsub

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

func TestSequenceTrackerFindsGapsAndDuplicates(t *testing.T) {
	tr := newSequenceTracker()
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
			want := stamp{publisher: "pub-1", seq: 42, since: 1796055553462, channel: channelChecksum("app:t"), scoped: true}
			body, err := m.Marshal("t", stamped(msg, want))
			require.NoError(t, err)
			got, ok := m.(stampReader).stampOf(string(body))
			require.True(t, ok)
			require.Equal(t, want, got, "the payload must not hide the real stamp")

			// Stamped by the codec, as a Publisher does: the same stamp.
			body, err = marshal(m, "t", msg, &want)
			require.NoError(t, err)
			got, ok = m.(stampReader).stampOf(string(body))
			require.True(t, ok)
			require.Equal(t, want, got)

			// A stamp of a Publisher before the channel checksum.
			old := stamp{publisher: "pub-0", seq: 7, since: 1796055553462}
			body, err = m.Marshal("t", stamped(msg, old))
			require.NoError(t, err)
			got, ok = m.(stampReader).stampOf(string(body))
			require.True(t, ok)
			require.Equal(t, old, got)

			body, err = m.Marshal("t", msg)
			require.NoError(t, err)
			_, _, ok = readStamp(m.(stampReader), string(body))
			require.False(t, ok, "an unstamped message has no stamp, whatever its payload says")
		})
	}
	_, isStampReader := Marshaler(RawJSONMarshaler{}).(stampReader)
	require.False(t, isStampReader, "raw JSON carries no metadata")
}

// The channel checksum is FNV-1a of the channel's bytes, written as 8
// lowercase hex digits: what a peer in another language computes.
func TestChannelChecksum(t *testing.T) {
	for channel, want := range map[string]string{
		"":                        "811c9dc5", // FNV-1a's offset basis
		"a":                       "e40c292c",
		"call.responded:uuid-123": "", // round trip only
	} {
		text := string(appendChannelChecksum(nil, channelChecksum(channel)))
		require.Len(t, text, 8)
		if want != "" {
			require.Equal(t, want, text, "%q", channel)
		}
		sum, ok := parseChannelChecksum(text)
		require.True(t, ok)
		require.Equal(t, channelChecksum(channel), sum)
	}
	for _, bad := range []string{"", "0123456", "012345678", "0123456G", "0123456A", "-1234567"} {
		_, ok := parseChannelChecksum(bad)
		require.False(t, ok, "%q", bad)
	}
}

// A payload may carry a stamp-shaped object (an audit log of bodies, say):
// only the envelope's own metadata counts, or the message could be dropped
// as a duplicate.
func TestReadStampIgnoresStampsInsidePayload(t *testing.T) {
	payload := `{"metadata":{"rps_pub":"P","rps_seq":"5"},"s":"\"metadata\":{\"}"}`
	for name, msg := range map[string]*message.Message{
		"no metadata":   message.NewMessage("u", []byte(payload)),
		"own metadata":  stamped(message.NewMessage("u", []byte(payload)), stamp{publisher: "real", seq: 7}),
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
	out := stamped(msg, stamp{publisher: "p", seq: 3, since: 5, channel: 0xabc, scoped: true})
	require.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	require.Equal(t, message.Metadata{
		"k": "v", MetadataPublisher: "p", MetadataSequence: "3", MetadataSince: "5", MetadataChannel: "00000abc",
	}, out.Metadata)
}

// readStamp is stampOf without the time: the stamp's identity.
func readStamp(r stampReader, body string) (publisher string, seq uint64, ok bool) {
	st, ok := r.stampOf(body)
	return st.publisher, st.seq, ok
}

// A Publisher's stamp on the wire, pinned by the golden file that Node wrote
// (testdata/envelope/gen.js, which computes the channel checksum as a
// TypeScript peer would): the stamp's members sorted with the message's own
// metadata, the envelope's keys in their order. The stamp reader finds it.
func TestStampGolden(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "envelope", "stamped.json"))
	require.NoError(t, err)
	msg := message.NewMessage("u-11", []byte(`{"ok":true}`))
	msg.Metadata.Set("k", "v")
	st := stamp{
		publisher: "dP6DdXXZR6ya6JcxqLn54V", seq: 7, since: 1796055553462,
		channel: channelChecksum("app:call.responded:uuid-123"), scoped: true,
	}
	body, err := marshal(JSONEnvelopeMarshaler{}, "call.responded:uuid-123", msg, &st)
	require.NoError(t, err)
	require.Equal(t, string(golden), string(body))
	got, ok := JSONEnvelopeMarshaler{}.stampOf(string(golden))
	require.True(t, ok)
	require.Equal(t, st, got)
}

// Streams that leave the names the tracker keeps are still checked by the
// hash of their name: their next numbers are in sequence, a skipped one is
// a gap, and none is taken for a new stream (which after a reconnect would
// count as a lost start).
func TestSequenceTrackerChecksStreamsForgottenByName(t *testing.T) {
	tr := newSequenceTracker()
	const streams = maxTrackedStreams + 1000
	for i := range streams {
		verdict, _ := tr.observe(fmt.Sprint("pub-", i), "ch", 1)
		require.Equal(t, newStream, verdict)
	}
	require.Len(t, tr.named, maxTrackedStreams)
	require.Len(t, tr.hashed, 1000)
	for i := range streams {
		verdict, _ := tr.observe(fmt.Sprint("pub-", i), "ch", 2)
		require.Equal(t, inSequence, verdict, "stream %d", i)
	}
	for i := range streams {
		verdict, firstMissing := tr.observe(fmt.Sprint("pub-", i), "ch", 4)
		require.Equal(t, gapFound, verdict, "stream %d", i)
		require.EqualValues(t, 3, firstMissing, "stream %d", i)
	}
	// A duplicate of a stream known by its hash only is delivered: a hash
	// is not a name.
	var hashedOnly streamKey
	for i := range streams {
		if _, ok := tr.named[streamKey{fmt.Sprint("pub-", i), "ch"}]; !ok {
			hashedOnly = streamKey{fmt.Sprint("pub-", i), "ch"}
			break
		}
	}
	verdict, _ := tr.observe(hashedOnly.publisher, hashedOnly.channel, 4)
	require.Equal(t, inSequence, verdict)
	verdict, _ = tr.observe(hashedOnly.publisher, hashedOnly.channel, 5)
	require.Equal(t, inSequence, verdict)
	require.False(t, tr.forgot())
}

// Past both bounds a stream is forgotten for good, and the tracker says
// so: a stream it does not know may be one it forgot.
func TestSequenceTrackerSaysWhenItForgot(t *testing.T) {
	tr := newSequenceTracker()
	for i := range maxTrackedStreams + maxHashedStreams {
		tr.observe("pub", fmt.Sprint("ch-", i), 1)
	}
	require.False(t, tr.forgot())
	tr.observe("pub", "one more", 1)
	require.True(t, tr.forgot())
	require.Len(t, tr.named, maxTrackedStreams)
	require.Len(t, tr.hashed, maxHashedStreams)
}
