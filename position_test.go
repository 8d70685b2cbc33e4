package redispubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

func TestPositionStringRoundTrip(t *testing.T) {
	for _, p := range []Position{{1, "e"}, {42, "k3x9"}, {18446744073709551615, "a-b-c"}} {
		got, err := ParsePosition(p.String())
		require.NoError(t, err)
		require.Equal(t, p, got)
	}
}

func TestParsePositionRefusesWhatStringNeverWrites(t *testing.T) {
	for _, s := range []string{"", "42", "42-", "-e", "x-e", "-1-e", "1-e\n", "18446744073709551616-e"} {
		_, err := ParsePosition(s)
		require.Error(t, err, "%q", s)
	}
}

func TestPositionOf(t *testing.T) {
	msg := message.NewMessage("u", nil)
	_, ok := PositionOf(msg)
	require.False(t, ok, "no metadata, no position")

	msg.Metadata.Set(MetadataOffset, "7")
	msg.Metadata.Set(MetadataEpoch, "ep")
	pos, ok := PositionOf(msg)
	require.True(t, ok)
	require.Equal(t, Position{Offset: 7, Epoch: "ep"}, pos)

	msg.Metadata.Set(MetadataOffset, "seven")
	_, ok = PositionOf(msg)
	require.False(t, ok, "an offset that is not a number is no position")
}
