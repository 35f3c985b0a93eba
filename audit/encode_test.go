package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/jcs"
)

func marshalStd(t testing.TB, ev *Event) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// canonicalStd is the event as encoding/json writes it, in canonical form:
// what AppendJSON must write.
func canonicalStd(t testing.TB, ev *Event) []byte {
	out, err := jcs.Append(nil, nil, marshalStd(t, ev))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAppendJSONIsCanonicalEncodingJSON: AppendJSON writes what encoding/json
// writes, put in canonical form, byte for byte: hostile strings (controls,
// invalid UTF-8, U+2028), every float form, integers past 2^53.
func TestAppendJSONIsCanonicalEncodingJSON(t *testing.T) {
	key := "k1:00"
	n := int64(-3)
	ttft, audio := 1e-7, 12.5
	events := []Event{
		{},
		{V: 1, Type: TypeInference, ID: "x", Time: Timestamp(time.Unix(1, 5)), APIKeyID: &key,
			Input: Body{Hash: "blake3:ab", Bytes: 9, Tokens: &n}, Output: Body{FinishReason: "stop"},
			Latency: Latency{Total: 1234567.891, TTFT: &ttft, Upstream: 1e21, Overhead: -0.5},
			Status:  Status{Code: 504, Outcome: OutcomeUpstreamTimeout, Error: "e", UpstreamError: "u"}},
		{Model: Model{Name: "quote\" back\\ nl\n tab\t ctl\x01 del\x7f <html>&amp; \u2028\u2029 é 日本 bad\xff\xfe end"},
			Path: "/v1/\x00", Source: Source{Host: "h", Version: "v"}},
		{Model: Model{Name: "m", NameBytes: 5000, Checksum: "blake3:00", BaseChecksum: "blake3:01"}},
		{Input: Body{Bytes: 1<<60 + 1}, Output: Body{Bytes: -(1 << 55) - 3}, Log: &LogRef{Origin: "o/1", Seq: 1<<53 + 1, Prev: "ab"},
			Payload: &Payload{Age: []byte("x"), InputBytes: 3, OutputBytes: 4, Truncated: true}},
		{Status: Status{Code: 200, Outcome: OutcomeOK, AfterEnd: "upstream_broke_off"}},
		{Model: Model{Name: "whisper", FromAnswer: true}, Input: Body{AudioSeconds: &audio}, Output: Body{AudioSeconds: &audio},
			Payload: &Payload{}},
	}
	for i := range events {
		want := canonicalStd(t, &events[i])
		if got := events[i].AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("event %d:\nAppendJSON              %s\nencoding/json, canonical %s", i, got, want)
		}
	}
	for _, f := range []float64{0, math.Copysign(0, -1), 1, 0.1, 1e-6, 9.99e-7, 1e20, 1e21, 1.5e300, 123.456, math.SmallestNonzeroFloat64, -2.5e-9} {
		ev := Event{Latency: Latency{Total: f}}
		if got, want := ev.AppendJSON(nil), canonicalStd(t, &ev); !bytes.Equal(got, want) {
			t.Errorf("float %v:\n%s\n%s", f, got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("meta-llama/Llama-3.1-8B-Instruct", "/v1/chat/completions", 12.5, int64(7))
	f.Add("\xff\u2028\"", "\x00", 1e-9, int64(-1))
	f.Fuzz(func(t *testing.T, model, path string, total float64, tokens int64) {
		if math.IsNaN(total) || math.IsInf(total, 0) {
			return // encoding/json refuses these; the proxy never produces them
		}
		ev := Event{Model: Model{Name: model}, Path: path, Latency: Latency{Total: total}, Input: Body{Tokens: &tokens}}
		if got, want := ev.AppendJSON(nil), canonicalStd(t, &ev); !bytes.Equal(got, want) {
			t.Fatalf("\nAppendJSON              %s\nencoding/json, canonical %s", got, want)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	key, n, ttft := "k1:97ec80fcbebd63cd2bdc8f0a95078437", int64(12), 120.5
	ev := Event{V: 1, Type: TypeInference, ID: NewID(), Time: Timestamp(time.Now()), RequestID: NewID(),
		Method: "POST", Path: "/v1/chat/completions", Stream: true, Model: Model{Name: "meta-llama/Llama-3.1-8B-Instruct"},
		Input:    Body{Hash: "blake3:34ff478d98b2d56a4e31aee3e3f747f53b8b3d936c2a2ecc1c2981dfdc8a25b8", Bytes: 125, Tokens: &n},
		Output:   Body{Hash: "blake3:1fd5c6251fa970b69744aad714295bf8af333dcf9bdb190cf1e200d23bad2d42", Bytes: 3223, Tokens: &n, FinishReason: "stop"},
		APIKeyID: &key, Latency: Latency{Total: 403.893506, TTFT: &ttft, Upstream: 403.036007, Overhead: 0.857499},
		Status: Status{Code: 200, Outcome: OutcomeOK}, Source: Source{Host: "gpu-node-7", Version: "v0.1.0"}}
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = ev.AppendJSON(buf[:0])
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(&ev)
		}
	})
}
