package redispubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys of a message published with a history
// (PublisherConfig.History): the message's offset in its channel's history
// and the history's epoch. Together they are the message's Position.
const (
	// MetadataOffset is the message's offset in its channel's history, in
	// decimal: consecutive from 1, assigned by Redis, one sequence shared by
	// every Publisher of the channel.
	MetadataOffset = "rps_offset"
	// MetadataEpoch names the history the offset belongs to. It changes when
	// the history was lost (expired, evicted, flushed); an offset of another
	// epoch says nothing about this one.
	MetadataEpoch = "rps_epoch"
)

// ErrPositionLost is wrapped by the error of SubscribeFrom when the channel's
// history no longer holds what follows the position: it was trimmed past it,
// or its epoch changed.
var ErrPositionLost = errors.New("redispubsub: history no longer holds the position")

// PositionSubscriber is a Subscriber that can start a subscription after a
// position of its topic's history. *Subscriber implements it; the
// EventTarget uses it for FromPosition, over any Watermill Subscriber that
// does.
type PositionSubscriber interface {
	SubscribeFrom(ctx context.Context, topic string, from Position) (<-chan *message.Message, error)
}

// ErrPositionsUnsupported is wrapped by the error of AddEventListener with
// FromPosition when the EventTarget's Subscriber is not a
// PositionSubscriber, and by SubscribeFrom's on a Subscriber whose
// Marshaler is not the JSONEnvelopeMarshaler.
var ErrPositionsUnsupported = errors.New("redispubsub: the Subscriber cannot start from a position")

var _ PositionSubscriber = (*Subscriber)(nil)

// Position is where a message stands in its channel's history: what
// MetadataOffset and MetadataEpoch carry. Its String form travels where a
// position must be written as text (an SSE event's id, a browser's
// Last-Event-ID) and ParsePosition reads it back. A position speaks only for
// the channel of the message it came from.
type Position struct {
	Offset uint64
	Epoch  string
}

// String returns "<offset>-<epoch>", e.g. "42-k3x9"; ParsePosition reads it.
func (p Position) String() string {
	return strconv.FormatUint(p.Offset, 10) + "-" + p.Epoch
}

// IsZero reports whether p is the zero Position (no history position).
func (p Position) IsZero() bool { return p == Position{} }

// ParsePosition reads what Position.String wrote. It refuses anything else
// with an error that quotes the input.
func ParsePosition(s string) (Position, error) {
	offset, epoch, ok := strings.Cut(s, "-")
	if !ok || epoch == "" || strings.ContainsAny(epoch, "\r\n\x00") {
		return Position{}, fmt.Errorf("redispubsub: %q is not a position (want <offset>-<epoch>)", s)
	}
	n, err := strconv.ParseUint(offset, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("redispubsub: %q is not a position: offset: %w", s, err)
	}
	return Position{Offset: n, Epoch: epoch}, nil
}

// PositionOf returns the Position that msg's metadata carries; ok is false
// when msg carries none (it was published without a history, or by a peer
// that keeps none).
func PositionOf(msg *message.Message) (pos Position, ok bool) {
	epoch := msg.Metadata.Get(MetadataEpoch)
	offset := msg.Metadata.Get(MetadataOffset)
	if epoch == "" || offset == "" {
		return Position{}, false
	}
	n, err := strconv.ParseUint(offset, 10, 64)
	if err != nil {
		return Position{}, false
	}
	return Position{Offset: n, Epoch: epoch}, true
}
