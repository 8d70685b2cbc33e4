package redispubsub_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"

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
// member names match exactly and the last of repeated members wins; every
// metadata value must be a string.
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
