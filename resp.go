package redispubsub

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unsafe"
)

// This file reads and writes the RESP protocol of a Pub/Sub connection:
// the commands it sends (SUBSCRIBE and its kin, PING) and the replies Redis
// sends on a subscribed connection, in RESP2 (arrays) and RESP3 (pushes).
// It trusts no length it reads: a bulk string longer than the reader's
// limit is skipped without being allocated, and nesting is bounded.

// errProtocol is wrapped by every error about bytes that are not RESP, or
// not what a subscribed connection receives.
var errProtocol = errors.New("redispubsub: RESP protocol error")

// maxBulkBytes is Redis's own bound on a bulk string (proto-max-bulk-len's
// default, 512 MiB): a longer one is a broken stream, not a message.
const maxBulkBytes = 512 << 20

// maxNesting bounds how deep the reader follows a reply it skips.
const maxNesting = 8

// frameKind is what a reply on a subscribed connection is.
type frameKind uint8

const (
	frameOther       frameKind = iota // anything else (a push of another kind): ignored
	frameMessage                      // message, smessage: name is the channel
	framePMessage                     // pmessage: name is the pattern, channel the channel
	frameSubscribe                    // subscribe, ssubscribe, psubscribe confirmations
	frameUnsubscribe                  // unsubscribe, sunsubscribe, punsubscribe confirmations
	framePong                         // the answer to a PING
	frameError                        // an error reply: text is Redis's words
)

// frame is one reply. Its byte slices are valid until the next read; body
// is the message's own memory.
type frame struct {
	kind frameKind
	// sharded and pattern say which command family a confirmation or a
	// message belongs to: SSUBSCRIBE (smessage) or PSUBSCRIBE (pmessage).
	sharded, pattern bool
	name             []byte // channel (or pattern) of a message or confirmation
	channel          []byte // a pmessage's channel
	body             string // a message's body
	// oversized is set, and body left empty, for a message body longer than
	// the reader's limit: it was skipped. size is its length.
	oversized bool
	size      int
	text      []byte // an error reply's text; the push kind of frameOther
}

// respReader reads replies from a subscribed connection.
type respReader struct {
	r *bufio.Reader
	// maxBody bounds a message body that is read; a longer one is skipped.
	maxBody int
	// kind, name and channel hold the current frame's strings: a small
	// string is read into them, not allocated.
	kind, name, channel []byte
}

func newRESPReader(r io.Reader, maxBody int) *respReader {
	if maxBody <= 0 || maxBody > maxBulkBytes {
		maxBody = maxBulkBytes
	}
	return &respReader{r: bufio.NewReaderSize(r, 32<<10), maxBody: maxBody}
}

// readFrame reads the next reply into f. It returns io.EOF only when the
// stream ends between replies; in the middle of one, io.ErrUnexpectedEOF.
func (rr *respReader) readFrame(f *frame) error {
	*f = frame{}
	line, err := rr.line()
	if err != nil {
		return err
	}
	if err := rr.readReply(f, line); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// readReply reads the reply whose first line is line.
func (rr *respReader) readReply(f *frame, line []byte) error {
	for {
		switch line[0] {
		case '|': // a RESP3 attribute, which precedes the reply it is about
			n, err := rr.count(line)
			if err != nil {
				return err
			}
			if err := rr.skipElements(2*n, 1); err != nil {
				return err
			}
			if line, err = rr.line(); err != nil {
				return err
			}
			continue
		case '-', '!':
			text, err := rr.errorText(line)
			if err != nil {
				return err
			}
			f.kind, f.text = frameError, text
			return nil
		case '+':
			if string(line[1:]) == "PONG" {
				f.kind = framePong
			}
			return nil
		case '*', '>':
			n, err := rr.count(line)
			if err != nil {
				return err
			}
			return rr.readArray(f, n)
		}
		return rr.skipValue(line, 0)
	}
}

// readArray reads an array or push of n elements: a message, a
// confirmation, a RESP2 PONG, or something to skip.
func (rr *respReader) readArray(f *frame, n int) error {
	if n < 1 {
		return nil
	}
	kind, ok, err := rr.bulkInto(&rr.kind, 64)
	if err != nil {
		return err
	}
	if !ok {
		return rr.skipElements(n-1, 1)
	}
	f.text = kind
	rest := n - 1
	switch string(kind) {
	case "message", "smessage":
		if rest != 2 {
			break
		}
		f.kind, f.sharded = frameMessage, kind[0] == 's'
		if f.name, err = rr.readName(&rr.name); err != nil {
			return err
		}
		return rr.body(f)
	case "pmessage":
		if rest != 3 {
			break
		}
		f.kind, f.pattern = framePMessage, true
		if f.name, err = rr.readName(&rr.name); err != nil {
			return err
		}
		if f.channel, err = rr.readName(&rr.channel); err != nil {
			return err
		}
		return rr.body(f)
	case "subscribe", "ssubscribe", "psubscribe", "unsubscribe", "sunsubscribe", "punsubscribe":
		if rest != 2 {
			break
		}
		f.kind, f.sharded, f.pattern = confirmationKind(string(kind))
		// The channel is null when an UNSUBSCRIBE had nothing to end.
		if f.name, _, err = rr.bulkInto(&rr.name, rr.maxBody); err != nil {
			return err
		}
		return rr.skipElements(1, 1) // the subscription count
	case "pong":
		if rest != 1 {
			break
		}
		f.kind = framePong
		return rr.skipElements(1, 1)
	}
	f.kind = frameOther
	return rr.skipElements(rest, 1)
}

// confirmationKind tells a subscribe confirmation from an unsubscribe one,
// and the command family it answers.
func confirmationKind(kind string) (k frameKind, sharded, pattern bool) {
	switch kind {
	case "subscribe":
		return frameSubscribe, false, false
	case "ssubscribe":
		return frameSubscribe, true, false
	case "psubscribe":
		return frameSubscribe, false, true
	case "unsubscribe":
		return frameUnsubscribe, false, false
	case "sunsubscribe":
		return frameUnsubscribe, true, false
	}
	return frameUnsubscribe, false, true // punsubscribe
}

// readName reads a channel or pattern name into dst.
func (rr *respReader) readName(dst *[]byte) ([]byte, error) {
	b, ok, err := rr.bulkInto(dst, rr.maxBody)
	if err == nil && !ok {
		err = fmt.Errorf("%w: null channel name", errProtocol)
	}
	return b, err
}

// body reads a message's body into memory of its own, or skips it when it
// is longer than maxBody.
func (rr *respReader) body(f *frame) error {
	line, err := rr.line()
	if err != nil {
		return err
	}
	if line[0] != '$' {
		return fmt.Errorf("%w: message body of type %q", errProtocol, line[0])
	}
	n, err := rr.length(line)
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("%w: null message body", errProtocol)
	}
	f.size = n
	if n > rr.maxBody {
		f.oversized = true
		return rr.discard(n + 2)
	}
	if n == 0 {
		return rr.crlf()
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(rr.r, buf); err != nil {
		return err
	}
	// buf is never written again: the string shares its memory.
	f.body = unsafe.String(&buf[0], n)
	return rr.crlf()
}

// bulkInto reads a bulk (or simple) string of at most limit bytes into
// *dst, reusing its memory. ok is false for a null.
func (rr *respReader) bulkInto(dst *[]byte, limit int) (b []byte, ok bool, err error) {
	line, err := rr.line()
	if err != nil {
		return nil, false, err
	}
	switch line[0] {
	case '+':
		*dst = append((*dst)[:0], line[1:]...)
		return *dst, true, nil
	case '_':
		return nil, false, nil
	case '$':
	default:
		return nil, false, fmt.Errorf("%w: expected a string, got type %q", errProtocol, line[0])
	}
	n, err := rr.length(line)
	if err != nil || n < 0 {
		return nil, false, err
	}
	if n > limit {
		return nil, false, fmt.Errorf("%w: string of %d bytes where at most %d are expected", errProtocol, n, limit)
	}
	if cap(*dst) < n {
		*dst = make([]byte, n)
	}
	*dst = (*dst)[:n]
	if _, err := io.ReadFull(rr.r, *dst); err != nil {
		return nil, false, err
	}
	return *dst, true, rr.crlf()
}

// errorText returns the text of an error reply (simple or, RESP3, bulk).
func (rr *respReader) errorText(line []byte) ([]byte, error) {
	if line[0] == '-' {
		return bytes.Clone(line[1:]), nil
	}
	n, err := rr.length(line)
	if err != nil || n < 0 {
		return nil, err
	}
	if n > 64<<10 {
		return nil, fmt.Errorf("%w: error reply of %d bytes", errProtocol, n)
	}
	text := make([]byte, n)
	if _, err := io.ReadFull(rr.r, text); err != nil {
		return nil, err
	}
	return text, rr.crlf()
}

// skipElements skips n values.
func (rr *respReader) skipElements(n, depth int) error {
	for range n {
		line, err := rr.line()
		if err != nil {
			return err
		}
		if err := rr.skipValue(line, depth); err != nil {
			return err
		}
	}
	return nil
}

// skipValue skips the value whose first line is line.
func (rr *respReader) skipValue(line []byte, depth int) error {
	switch line[0] {
	case '+', '-', ':', '_', '#', ',', '(':
		return nil
	case '$', '=', '!':
		n, err := rr.length(line)
		if err != nil || n < 0 {
			return err
		}
		return rr.discard(n + 2)
	case '*', '>', '~', '%', '|':
		if depth >= maxNesting {
			return fmt.Errorf("%w: replies nested deeper than %d", errProtocol, maxNesting)
		}
		n, err := rr.count(line)
		if err != nil {
			return err
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		return rr.skipElements(n, depth+1)
	}
	return fmt.Errorf("%w: unknown type %q", errProtocol, line[0])
}

// line reads one line, without its CRLF. It is valid until the next read.
func (rr *respReader) line() ([]byte, error) {
	line, err := rr.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, rr.r.Size())
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: malformed line %q", errProtocol, line)
	}
	return line[:len(line)-2], nil
}

// length parses a bulk string's length: -1 for a null.
func (rr *respReader) length(line []byte) (int, error) {
	n, err := parseLength(line[1:])
	if err != nil {
		return 0, err
	}
	if n > maxBulkBytes {
		return 0, fmt.Errorf("%w: bulk string of %d bytes", errProtocol, n)
	}
	return n, nil
}

// count parses an aggregate's element count; a null counts 0.
func (rr *respReader) count(line []byte) (int, error) {
	n, err := parseLength(line[1:])
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, nil
	}
	if n > 1<<20 {
		return 0, fmt.Errorf("%w: aggregate of %d elements", errProtocol, n)
	}
	return n, nil
}

func parseLength(b []byte) (int, error) {
	if string(b) == "-1" {
		return -1, nil
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, fmt.Errorf("%w: bad length %q", errProtocol, b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad length %q", errProtocol, b)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// crlf reads the CRLF that ends a bulk string.
func (rr *respReader) crlf() error {
	b, err := rr.r.Peek(2)
	if err != nil {
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return fmt.Errorf("%w: bulk string not ended by CRLF", errProtocol)
	}
	_, err = rr.r.Discard(2)
	return err
}

// discard skips n bytes.
func (rr *respReader) discard(n int) error {
	_, err := rr.r.Discard(n)
	return err
}

// appendCommand appends a command (its name and args) in RESP.
func appendCommand(buf []byte, name string, args []string) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(1+len(args)), 10)
	buf = append(buf, '\r', '\n')
	buf = appendBulk(buf, name)
	for _, arg := range args {
		buf = appendBulk(buf, arg)
	}
	return buf
}

func appendBulk(buf []byte, s string) []byte {
	buf = append(buf, '$')
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, '\r', '\n')
	buf = append(buf, s...)
	return append(buf, '\r', '\n')
}
