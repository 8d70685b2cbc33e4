package redispubsub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// isUTF8JSON reports whether b is one valid JSON value encoded as UTF-8.
func isUTF8JSON(b []byte) bool {
	return utf8.Valid(b) && json.Valid(b)
}

// referenceEnvelope is what referenceDecodeEnvelope found in a body.
type referenceEnvelope struct {
	payload  []byte
	uuid     string // "" when absent, null or empty
	metadata map[string]string
}

// referenceDecodeEnvelope is a slow, obviously correct decoder of the JSON
// envelope built on encoding/json, used as an oracle by the fuzz target. It
// follows the documented rules: an empty or null body is a null payload;
// with "payload_encoding":"base64" the payload is the bytes its base64 string
// encodes; member names match exactly and the last of repeated members wins;
// every metadata value must be a string.
func referenceDecodeEnvelope(body []byte) (referenceEnvelope, bool) {
	env := referenceEnvelope{payload: []byte("null"), metadata: map[string]string{}}
	if len(body) == 0 {
		return env, true
	}
	if !isUTF8JSON(body) {
		return env, false
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return env, false // not an object (nor null)
	}
	if p, ok := members["payload"]; ok {
		env.payload = p
	}
	if enc, ok := members["payload_encoding"]; ok && string(enc) != "null" {
		var encoding, text string
		if json.Unmarshal(enc, &encoding) != nil || encoding != "base64" {
			return env, false
		}
		if p, ok := members["payload"]; !ok || json.Unmarshal(p, &text) != nil {
			return env, false
		}
		decoded, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return env, false
		}
		env.payload = decoded
	}
	if u, ok := members["uuid"]; ok && string(u) != "null" {
		if u[0] != '"' {
			return env, false
		}
		if err := json.Unmarshal(u, &env.uuid); err != nil {
			return env, false
		}
	}
	if md, ok := members["metadata"]; ok && string(md) != "null" {
		if md[0] != '{' {
			return env, false
		}
		// Decode member by member rather than into a map so that a repeated
		// key with a non-string value is seen.
		var entries map[string]json.RawMessage
		if err := json.Unmarshal(md, &entries); err != nil {
			return env, false
		}
		if !allJSONObjectValuesAreStrings(md) {
			return env, false
		}
		for k, v := range entries {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return env, false
			}
			env.metadata[k] = s
		}
	}
	return env, true
}

// wantEnvelopePayload returns the "payload" value that the envelope writes
// for payload, and whether it is base64 (followed by payload_encoding):
// JSON nested less than encoding/json's limit of 10,000 levels (so that the
// envelope around it stays within it) is compacted, anything else is base64.
func wantEnvelopePayload(payload []byte) (value string, isBase64 bool) {
	if len(payload) == 0 {
		return "null", false
	}
	if isUTF8JSON(payload) && json.Valid(append(append([]byte("["), payload...), ']')) {
		var compact bytes.Buffer
		if err := json.Compact(&compact, payload); err != nil {
			panic(err)
		}
		return compact.String(), false
	}
	return `"` + base64.StdEncoding.EncodeToString(payload) + `"`, true
}

// allJSONObjectValuesAreStrings reports whether every member value of the
// valid JSON object obj, repeated members included, is a string.
func allJSONObjectValuesAreStrings(obj []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil { // '{'
		return false
	}
	for dec.More() {
		if _, err := dec.Token(); err != nil { // key
			return false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil || v[0] != '"' {
			return false
		}
	}
	return true
}

// TestMarshalersAreSafeForConcurrentUse runs each marshaler from several
// goroutines at once; run with -race.
func TestMarshalersAreSafeForConcurrentUse(t *testing.T) {
	for name, m := range map[string]redispubsub.Marshaler{
		"envelope": redispubsub.JSONEnvelopeMarshaler{},
		"rawjson":  redispubsub.RawJSONMarshaler{},
		"msgpack":  redispubsub.MsgpackMarshaler{},
	} {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 200 {
						in := message.NewMessage(fmt.Sprintf("u-%d-%d", g, i), message.Payload(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i)))
						in.Metadata.Set("g", fmt.Sprint(g))
						body, err := m.Marshal("t:id", in)
						if !assert.NoError(t, err) {
							return
						}
						out, err := m.Unmarshal("t:id", body)
						if !assert.NoError(t, err) {
							return
						}
						assert.Equal(t, string(in.Payload), string(out.Payload))
					}
				}()
			}
			wg.Wait()
		})
	}
}

// Every marshaler decodes every body it encodes: a payload that Marshal
// takes must reach the subscribers. The deep JSON payloads sit at
// encoding/json's nesting limit of 10,000 levels, which the decoders apply
// to a whole body: the envelope adds a level around its payload, so it
// carries a payload of 10,000 levels as base64. (A regression test: the
// envelope embedded it as JSON, and every Subscriber refused the body.)
// RawJSONMarshaler refuses only what its Unmarshal would refuse as a body.
func TestMarshalersDecodeWhatTheyEncode(t *testing.T) {
	deep := func(depth int, open, closing string) string {
		return strings.Repeat(open, depth) + "1" + strings.Repeat(closing, depth)
	}
	payloads := map[string]string{
		"text":    "x",
		"binary":  "\x00\xff\x80",
		"empty":   "",
		"compact": `{"a":[1,2]}`,
	}
	for _, depth := range []int{9999, 10000, 10001} {
		payloads[fmt.Sprintf("arrays %d deep", depth)] = deep(depth, "[", "]")
		payloads[fmt.Sprintf("objects %d deep", depth)] = deep(depth, `{"a":`, "}")
	}
	for name, m := range map[string]redispubsub.Marshaler{
		"envelope": redispubsub.JSONEnvelopeMarshaler{},
		"rawjson":  redispubsub.RawJSONMarshaler{},
		"msgpack":  redispubsub.MsgpackMarshaler{},
	} {
		for payloadName, payload := range payloads {
			t.Run(name+"/"+payloadName, func(t *testing.T) {
				body, err := m.Marshal("t:id", message.NewMessage("u-1", message.Payload(payload)))
				if _, isRaw := m.(redispubsub.RawJSONMarshaler); isRaw && err != nil {
					require.ErrorIs(t, err, redispubsub.ErrPayloadNotJSON)
					_, err := m.Unmarshal("t:id", []byte(payload))
					require.ErrorIs(t, err, redispubsub.ErrMalformedMessage, "Marshal refused a payload that Unmarshal takes as a body")
					return
				}
				require.NoError(t, err)
				msg, err := m.Unmarshal("t:id", body)
				require.NoError(t, err, "Unmarshal refuses what Marshal wrote")
				want := payload
				if payload == "" && name != "msgpack" {
					want = "null"
				}
				require.Equal(t, want, string(msg.Payload))
			})
		}
	}
}
