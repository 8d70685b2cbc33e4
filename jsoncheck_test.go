package redispubsub

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// checkJSON agrees with encoding/json on strings whose special bytes (a
// quote, a backslash, a control character, non-ASCII) fall at every offset
// of the eight-byte steps of the string scan.
func TestCheckJSONStringsAgreeWithEncodingJSON(t *testing.T) {
	specials := []string{`"`, `\`, `\"`, `\\`, `\n`, `\u00e9`, `\u12`, "\x01", "\x1f", "\x7f", "é", "\xff", " ", "a"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := []byte{'"'}
		for range r.IntN(40) {
			if r.IntN(4) == 0 {
				b = append(b, specials[r.IntN(len(specials))]...)
			} else {
				b = append(b, byte('a'+r.IntN(26)))
			}
		}
		b = append(b, '"')
		want := json.Valid(b) // checkJSON leaves UTF-8 to its callers, as json.Valid does
		got, _ := checkJSON(b, 10000)
		if got != want {
			t.Fatalf("checkJSON(%q) = %v, encoding/json says %v", b, got, want)
		}
	}
}

func BenchmarkCheckJSONLongString(b *testing.B) {
	payload := []byte(`"` + string(bytesOfLen(64<<10, 'x')) + `"`)
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if ok, _ := checkJSON(payload, 10000); !ok {
			b.Fatal("not valid")
		}
	}
}

func bytesOfLen(n int, c byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
