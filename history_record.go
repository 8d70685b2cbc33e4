package redispubsub

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// A history holds each message as a record: what a Subscriber decodes from
// the published envelope, and no more. The envelope's type and id follow
// from the channel, its position from where the record sits in the history,
// so neither is stored; a UUID in its canonical form takes 16 bytes. For a
// 256-byte payload a record is 274 bytes where the envelope is 394, and a
// history holds a message in about 290 bytes of Redis memory (see the
// README's bench).
//
//	record   = kind uuid count pair* payload
//	kind     = 1 (uuid as text) | 2 (uuid as 16 bytes)
//	uuid     = uvarint-length bytes | 16 bytes
//	count    = uvarint: the metadata pairs that follow
//	pair     = uvarint-length key, uvarint-length value (keys sorted)
//	payload  = the rest: the payload as the envelope's decoder gives it
//	           (JSON compacted, other bytes, base64 on the wire, as they
//	           are; nothing for an empty payload, which decodes as null)
const (
	recordTextUUID   = 1
	recordBinaryUUID = 2
)

// errBadRecord is wrapped by decodeRecord's errors.
var errBadRecord = errors.New("redispubsub: a history entry that this package did not write")

// appendRecord appends the record of msg, as the envelope carries it with
// form its payload's form, to b. The record decodes (decodeRecord) to the
// message that decoding the envelope gives: the same UUID, metadata (less
// the stamp's keys; text made valid UTF-8 as the envelope makes it) and
// payload.
func appendRecord(b []byte, msg *message.Message, form payloadForm) []byte {
	if id, ok := parseCanonicalUUID(msg.UUID); ok {
		b = append(b, recordBinaryUUID)
		b = append(b, id[:]...)
	} else {
		b = append(b, recordTextUUID)
		b = appendRecordString(b, msg.UUID)
	}
	// Sorted, as the envelope writes them: two keys that UTF-8 repair
	// makes equal then decode to the same value as from the envelope.
	var keysBuf [8]string
	keys := keysBuf[:0]
	for k := range msg.Metadata {
		if recordKeeps(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendRecordString(b, k)
		b = appendRecordString(b, msg.Metadata[k])
	}
	switch form {
	case payloadNull:
		return b
	case payloadSpacedJSON:
		return appendCompactJSON(b, msg.Payload)
	default:
		return append(b, msg.Payload...)
	}
}

// recordKeeps reports whether a record keeps the metadata key k: the
// envelope's decoder drops the stamp's keys, and the position is the
// history's own.
func recordKeeps(k string) bool {
	return k != MetadataEpoch && k != MetadataOffset && !isStampKey([]byte(k))
}

// appendRecordString appends s, made valid UTF-8 as appendJSONString makes
// it, with its length first.
func appendRecordString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s, _ = unquoteJSONString(string(appendJSONString(nil, s)))
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeRecord returns the message that record holds, at position pos of
// its history (in its metadata, as the published envelope carries it). The
// payload shares record's memory, capped, as the envelope decoder's does.
func decodeRecord(record string, pos Position) (*message.Message, error) {
	r := recordReader{s: record}
	var uuid string
	switch kind := r.byte(); kind {
	case recordBinaryUUID:
		uuid = formatUUID(r.bytes(16))
	case recordTextUUID:
		uuid = r.string()
	default:
		return nil, fmt.Errorf("%w: kind %d of %d bytes", errBadRecord, kind, len(record))
	}
	count := r.uvarint()
	if r.err != nil || count > uint64(len(r.s)) {
		return nil, fmt.Errorf("%w: %d bytes", errBadRecord, len(record))
	}
	if uuid == "" {
		uuid = watermill.NewUUID()
	}
	msg := message.NewMessage(uuid, nil)
	for range count {
		k := r.string()
		msg.Metadata[k] = r.string()
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %d bytes", errBadRecord, len(record))
	}
	msg.Metadata[MetadataEpoch] = pos.Epoch
	msg.Metadata[MetadataOffset] = strconv.FormatUint(pos.Offset, 10)
	if r.s == "" {
		msg.Payload = nullPayload()
	} else {
		payload := bytesOf(r.s)
		msg.Payload = payload[:len(payload):len(payload)]
	}
	return msg, nil
}

// recordReader reads a record from its start; after the first error every
// read returns zero values and err says so.
type recordReader struct {
	s   string
	err error
}

func (r *recordReader) byte() byte {
	b := r.bytes(1)
	if b == "" {
		return 0
	}
	return b[0]
}

func (r *recordReader) bytes(n int) string {
	if r.err != nil || n > len(r.s) {
		r.err = errBadRecord
		return ""
	}
	b := r.s[:n]
	r.s = r.s[n:]
	return b
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(bytesOf(r.s))
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.s = r.s[n:]
	return v
}

func (r *recordReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.s)) {
		r.err = errBadRecord
		return ""
	}
	return r.bytes(int(n))
}

// parseCanonicalUUID returns the 16 bytes of s when s is a UUID in its
// canonical form, lower-case hex in groups of 8-4-4-4-12 (what
// watermill.NewUUID gives), the only form formatUUID gives back.
func parseCanonicalUUID(s string) (id [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	j := 0
	for i := 0; i < 36; i += 2 {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
		}
		hi, ok1 := lowerHexValue(s[i])
		lo, ok2 := lowerHexValue(s[i+1])
		if !ok1 || !ok2 {
			return id, false
		}
		id[j] = hi<<4 | lo
		j++
	}
	return id, true
}

func lowerHexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// formatUUID returns the canonical form of the 16 bytes id.
func formatUUID(id string) string {
	if len(id) != 16 {
		return ""
	}
	b := make([]byte, 0, 36)
	for i := range 16 {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, lowerHex[id[i]>>4], lowerHex[id[i]&0xF])
	}
	return string(b)
}
