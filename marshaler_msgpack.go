package redispubsub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/vmihailenco/msgpack/v5"
)

// msgpackVersion is the version of the MsgpackMarshaler body layout.
const msgpackVersion = 1

// MsgpackMarshaler is a binary-safe Marshaler for Go peers. It round-trips
// any payload bytes, the UUID and the metadata exactly.
//
// The body (version 1) is a MessagePack array of exactly four elements:
//
//	[1, uuid (str), metadata (map str→str, keys in increasing order), payload (bin, or nil)]
//
// The topic is not part of the body: the channel is authoritative for it.
//
// Round trip guarantees: the UUID (also an empty one) and every payload byte
// come back unchanged, and so does the distinction between a nil payload
// (encoded as MessagePack nil, decoded as nil) and an empty non-nil one
// (encoded as a zero-length bin, decoded as a non-nil empty slice).
// Metadata comes back with the same entries; the decoded message's Metadata
// is never nil, also when the encoded one was.
//
// Unmarshal accepts str as well as bin for strings and the payload, and nil
// for an empty string. It returns an error wrapping ErrMalformedMessage for
// anything else: another version, another layout, trailing bytes, truncated
// or garbage input. It checks every length prefix against the bytes left in
// the body before allocating for it, so a short body cannot make it allocate
// gigabytes (msgpack/v5's own DecodeBytes allocates whatever a bin length
// claims).
//
// The zero value is ready to use and safe for concurrent use.
type MsgpackMarshaler struct{}

// Marshal implements Marshaler.
func (MsgpackMarshaler) Marshal(_ string, msg *message.Message) ([]byte, error) {
	return marshalMsgpack(msg, nil)
}

func (MsgpackMarshaler) marshalStamped(_ string, msg *message.Message, st stamp) ([]byte, error) {
	return marshalMsgpack(msg, &st)
}

// marshalMsgpack encodes msg, with st in its metadata when not nil.
func marshalMsgpack(msg *message.Message, st *stamp) ([]byte, error) {
	if msg == nil {
		return nil, errNilMessage
	}
	size := 1 + 1 + 5 + len(msg.UUID) + 5 + 5 + len(msg.Payload)
	for k, v := range msg.Metadata {
		size += 5 + len(k) + 5 + len(v)
	}
	var keysBuf [8]string
	keys := stampedKeys(keysBuf[:0], msg.Metadata, st)
	if st != nil {
		size += 4*5 + len(MetadataPublisher) + len(MetadataSequence) + len(MetadataSince) + len(MetadataChannel) +
			len(st.publisher) + 48
	}
	var buf bytes.Buffer
	buf.Grow(size)

	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)

	// Writes to a bytes.Buffer do not fail, so neither can these.
	err := errors.Join(
		enc.EncodeArrayLen(4),
		enc.EncodeUint(msgpackVersion),
		enc.EncodeString(msg.UUID),
		enc.EncodeMapLen(len(keys)),
	)
	for _, k := range keys {
		v := msg.Metadata[k]
		if st != nil && k == MetadataPublisher {
			v = st.publisher
		} else if st != nil && k == MetadataSequence {
			v = strconv.FormatUint(st.seq, 10)
		} else if st != nil && k == MetadataSince {
			v = strconv.FormatInt(st.since, 10)
		} else if st != nil && k == MetadataChannel {
			v = string(appendChannelChecksum(nil, st.channel))
		}
		err = errors.Join(err, enc.EncodeString(k), enc.EncodeString(v))
	}
	err = errors.Join(err, enc.EncodeBytes(msg.Payload))
	if err != nil {
		return nil, fmt.Errorf("redispubsub: encoding message %q as msgpack: %w", msg.UUID, err)
	}
	return buf.Bytes(), nil
}

// Unmarshal implements Marshaler.
func (MsgpackMarshaler) Unmarshal(_ string, body []byte) (*message.Message, error) {
	return unmarshalMsgpack(body, false)
}

func (MsgpackMarshaler) unmarshalUnstamped(_ string, body string) (*message.Message, error) {
	return unmarshalMsgpack(bytesOf(body), true)
}

// unmarshalMsgpack decodes body, leaving the stamp's metadata out when
// unstamped is set. It neither retains nor modifies body.
func unmarshalMsgpack(body []byte, unstamped bool) (*message.Message, error) {
	msg, err := decodeMsgpackBody(body, unstamped)
	if err != nil {
		return nil, fmt.Errorf("%w: msgpack: %w", ErrMalformedMessage, err)
	}
	return msg, nil
}

func decodeMsgpackBody(body []byte, unstamped bool) (*message.Message, error) {
	r := bytes.NewReader(body)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	// A *bytes.Reader is an io.ByteScanner, so the decoder reads from it
	// directly, without buffering: r's position is the decoder's position.
	dec.Reset(r)

	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, msgpackReadErr(err)
	}
	if n != 4 {
		return nil, fmt.Errorf("body is an array of %d elements, want 4", n)
	}
	version, err := dec.DecodeUint64()
	if err != nil {
		return nil, fmt.Errorf("version: %w", msgpackReadErr(err))
	}
	if version != msgpackVersion {
		return nil, fmt.Errorf("unsupported version %d, want %d", version, msgpackVersion)
	}

	uuid, err := readMsgpackBytes(dec, r, body)
	if err != nil {
		return nil, fmt.Errorf("uuid: %w", err)
	}

	mdLen, err := dec.DecodeMapLen()
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", msgpackReadErr(err))
	}
	// Each entry takes at least two bytes: bound a forged length before
	// allocating for it.
	if mdLen > r.Len()/2 {
		return nil, fmt.Errorf("metadata: %d entries claimed, only %d bytes left", mdLen, r.Len())
	}
	md := make(message.Metadata, max(mdLen, 0))
	for range mdLen {
		k, err := readMsgpackBytes(dec, r, body)
		if err != nil {
			return nil, fmt.Errorf("metadata key: %w", err)
		}
		v, err := readMsgpackBytes(dec, r, body)
		if err != nil {
			return nil, fmt.Errorf("metadata value for key %q: %w", k, err)
		}
		if !unstamped || !isStampKey(k) {
			md[string(k)] = string(v)
		}
	}

	payload, err := readMsgpackBytes(dec, r, body)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d trailing bytes after the message", r.Len())
	}

	msg := message.NewMessage(string(uuid), bytes.Clone(payload))
	msg.Metadata = md
	return msg, nil
}

// readMsgpackBytes reads a str, bin or nil at the decoder's position and
// returns its bytes as a slice of body (nil for nil). It checks the length
// prefix against what is left of body before taking anything, instead of
// letting msgpack allocate what the prefix claims.
func readMsgpackBytes(dec *msgpack.Decoder, r *bytes.Reader, body []byte) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, msgpackReadErr(err)
	}
	if n < 0 {
		return nil, nil
	}
	if n > r.Len() {
		return nil, fmt.Errorf("length %d exceeds the %d bytes left", n, r.Len())
	}
	start := len(body) - r.Len()
	if _, err := r.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, err
	}
	return body[start : start+n : start+n], nil
}

// msgpackReadErr turns the EOF of a truncated body into a clearer error.
func msgpackReadErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
