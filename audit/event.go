// Package audit owns the audit record: the schema of the JSON event written
// for every proxied request, and the Recorder contract through which the proxy
// hands a finished event to whatever keeps it.
//
// # Event schema, version 1
//
// One JSON object per inference:
//
//	{"v":1,"type":"inference","id":"<event uuid>","time":"2026-11-23T07:47:16.123456789Z",
//	 "request_id":"…","method":"POST","path":"/v1/chat/completions","stream":true,
//	 "model":{"name":"<from the request body>","checksum":"blake3:<hex>"},"gpu":"sha256:<hex>"|null,
//	 "input":{"hash":"blake3:<hex>","bytes":N,"tokens":N},
//	 "output":{"hash":"blake3:<hex>","bytes":N,"tokens":N,"finish_reason":"stop"},
//	 "api_key_id":"k1:<hex>"|null,
//	 "latency_ms":{"total":F,"ttft":F,"upstream":F,"overhead":F},
//	 "status":{"code":200,"outcome":"ok"},
//	 "source":{"host":"…","version":"…"}}
//
// time is when the request was received, in UTC with nanoseconds. input.hash
// digests the exact request body bytes the client sent; output.hash digests
// the exact response body bytes written to the client (after transfer
// decoding: the bytes an HTTP client library hands its caller). Token counts
// are vLLM's usage and are absent when the upstream reported none.
//
// Fields are only ever added to version 1; a change of meaning or a removal
// bumps "v".
//
// Event.AppendJSON writes an event in RFC 8785 canonical form (members
// sorted by name, no whitespace), the form the log hashes; the log
// (auditlog.Chain.Append) adds the "log" member at its place. The object
// above is shown in a reading order; the spooled and shipped line has the
// same members, sorted. Readers must not depend on member order: an
// aggregator may re-encode a line in another.
package audit

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// SchemaVersion is the value of every event's "v" field.
const SchemaVersion = 1

// Outcome says how a proxied exchange ended. It complements the HTTP status
// code: a stream can fail after its 200 was sent.
type Outcome string

// The outcomes.
const (
	// OutcomeOK: the upstream answered without error and the whole answer
	// reached the client.
	OutcomeOK Outcome = "ok"
	// OutcomeUpstreamError: the upstream answered with an error status
	// (>= 400), sent an error inside a 200 stream, or broke off its answer.
	OutcomeUpstreamError Outcome = "upstream_error"
	// OutcomeUpstreamUnreachable: no connection to the upstream could be made
	// or the request could not be sent; the client got a 502.
	OutcomeUpstreamUnreachable Outcome = "upstream_unreachable"
	// OutcomeUpstreamTimeout: the upstream sent no byte for the idle timeout;
	// the client got a 504, or its stream was cut.
	OutcomeUpstreamTimeout Outcome = "upstream_timeout"
	// OutcomeClientCancelled: the client went away (or stopped reading for the
	// idle timeout) before the whole answer was written to it.
	OutcomeClientCancelled Outcome = "client_cancelled"
	// OutcomeRejected: the proxy refused the request itself (for example a
	// body over the size limit) and the upstream never saw it.
	OutcomeRejected Outcome = "rejected"
)

// Event is one audit record. Its JSON encoding is the wire format described
// in the package documentation; field order in the struct is the order of
// keys on the wire.
type Event struct {
	V         int       `json:"v"`
	Type      string    `json:"type"`
	ID        string    `json:"id"`
	Time      Timestamp `json:"time"`
	RequestID string    `json:"request_id"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Stream    bool      `json:"stream"`
	Model     Model     `json:"model"`
	// GPU is the digest ("sha256:…") of the identity of the GPUs the
	// upstream ran on, whose full record is the log's newest gpu_identity
	// event; nil when NVML is not available to the sidecar.
	GPU    *string `json:"gpu"`
	Input  Body    `json:"input"`
	Output Body    `json:"output"`
	// APIKeyID is the keyed id of the bearer token (see package hashing), or
	// nil when the request carried none.
	APIKeyID *string `json:"api_key_id"`
	Latency  Latency `json:"latency_ms"`
	Status   Status  `json:"status"`
	Source   Source  `json:"source"`
	// Payload is the encrypted capture of both bodies, when capture is on
	// (see package payload).
	Payload *Payload `json:"payload,omitempty"`
	// Log is the event's place in its log. The proxy leaves it nil; the
	// spool's Chain adds it as the event is committed (see LogRef).
	Log *LogRef `json:"log,omitempty"`
}

// LogRef is an event's place in its log: the "log" member of every event
// written by a sidecar.
//
//	"log":{"origin":"<origin>","seq":N,"prev":"<hex>"}
//
// Origin names the log (one sidecar instance and epoch); Seq numbers its
// events from 0 without gaps; Prev is the leaf hash (package auditlog) of the event with
// seq N-1, in lower-case hex, and "" for seq 0.
//
// An event's leaf hash is the RFC 6962 leaf hash of its canonical bytes,
// SHA-256(0x00 || JCS(event)), with JCS as RFC 8785 defines it and the "log"
// member included. The events of one origin, in seq order, are the leaves of
// an RFC 6962 Merkle tree, which checkpoints sign.
type LogRef struct {
	Origin string `json:"origin"`
	Seq    int64  `json:"seq"`
	Prev   string `json:"prev"`
}

// Payload is an encrypted capture of a request's bodies: an age file (base64
// in JSON) that only the holders of the recipients' identities can open.
// InputBytes and OutputBytes count the captured bytes; Truncated says a body
// was longer than the capture limit, so only its start is captured (the
// event's hashes still cover the whole bodies).
type Payload struct {
	Age         []byte `json:"age"`
	InputBytes  int64  `json:"input_bytes"`
	OutputBytes int64  `json:"output_bytes"`
	Truncated   bool   `json:"truncated,omitempty"`
}

// Model identifies the model a request asked for.
type Model struct {
	// Name is the "model" field of the request body; empty when the body had
	// none (GET /v1/models, malformed JSON). A name longer than
	// MaxModelNameBytes (no model is served under one) is cut to its first
	// MaxModelNameBytes bytes, at a character boundary, and NameBytes says
	// how long it was: a client must not make its events megabytes long.
	Name string `json:"name"`
	// NameBytes is the length of a name that Name holds only the start of;
	// 0 when Name is whole.
	NameBytes int64 `json:"name_bytes,omitempty"`
	// FromAnswer says the request named no model (vLLM then serves its
	// default one) and Name is the "model" member of vLLM's answer.
	FromAnswer bool `json:"from_answer,omitempty"`
	// Checksum is the model checksum (see hashing.Manifest) of the weights
	// serving Name, a LoRA adapter's own for an adapter; "pending" while
	// they are first hashed; empty when they are unknown to the sidecar.
	Checksum string `json:"checksum,omitempty"`
	// BaseChecksum is the base model's checksum for a LoRA adapter.
	BaseChecksum string `json:"base_checksum,omitempty"`
}

// MaxModelNameBytes bounds Model.Name.
const MaxModelNameBytes = 1024

// Body describes one message body.
type Body struct {
	// Hash is the digest string of the body bytes (see package hashing).
	// Empty only when the bytes were never seen, as for a request rejected
	// before its body was read.
	Hash string `json:"hash,omitempty"`
	// Bytes is the body's length in bytes.
	Bytes int64 `json:"bytes"`
	// Tokens is vLLM's token count (usage.prompt_tokens for input,
	// completion_tokens for output; input_tokens and output_tokens for the
	// Responses and Messages APIs); nil when the upstream reported none,
	// never a made-up 0.
	Tokens *int64 `json:"tokens"`
	// FinishReason is the first choice's finish_reason (output only); for
	// the Responses API the response's status, or its incomplete reason;
	// for the Messages API the stop_reason.
	FinishReason string `json:"finish_reason,omitempty"`
	// AudioSeconds is the audio length vLLM bills a transcription by (its
	// usage {"type":"duration","seconds":N}; input only), nil otherwise.
	AudioSeconds *float64 `json:"audio_seconds,omitempty"`
}

// Latency holds durations in milliseconds.
type Latency struct {
	// Total runs from the request being received to the last response byte
	// being written to the client.
	Total float64 `json:"total"`
	// TTFT runs from the request being received to the first response body
	// byte from the upstream; set for streamed responses only.
	TTFT *float64 `json:"ttft,omitempty"`
	// Upstream is the time spent waiting on the upstream: for its response
	// header and, for streamed bodies, blocked reading its body.
	Upstream float64 `json:"upstream"`
	// Overhead is Total minus Upstream: what the proxy (and a slow client)
	// added.
	Overhead float64 `json:"overhead"`
}

// Status is how the exchange ended.
type Status struct {
	// Code is the HTTP status code sent to the client.
	Code    int     `json:"code"`
	Outcome Outcome `json:"outcome"`
	// Error is a short machine-readable reason for an outcome other than ok,
	// such as "upstream_idle_timeout" or "body_too_large". It never holds
	// request or response content.
	Error string `json:"error,omitempty"`
	// UpstreamError is the type of an error the upstream reported inside a
	// 200 stream ("InternalServerError"); never its message, which may quote
	// the prompt.
	UpstreamError string `json:"upstream_error,omitempty"`
	// AfterEnd says what went wrong on the upstream's side after the
	// answer's end had arrived whole (a stream's data: [DONE] or its last
	// typed event), which the outcome does not count against the answer:
	// "upstream_broke_off" or "upstream_idle_timeout" (the connection broke
	// or idled out before the body's own end), "tail_withheld" (the
	// upstream sent more than a buffer after the end; the proxy ended the
	// client's body with what it had hashed and forwarded nothing more).
	// Empty when nothing did.
	AfterEnd string `json:"after_end,omitempty"`
}

// Source identifies the sidecar that wrote the event.
type Source struct {
	Host    string `json:"host"`
	Version string `json:"version"`
}

// Recorder keeps finished events. The proxy calls Record once per request,
// from the goroutine that serves it: when the upstream's answer has ended,
// before the answer's last bytes go to the client (they wait until Record
// returns), or when the exchange failed. Implementations must be safe for
// concurrent use and must not retain ev after Record returns: the caller
// reuses it.
//
// Record returns an error when the event could not be kept. The proxy counts
// it in auditproxy_events_dropped_total, logs it, and withholds the end of
// the answer (the connection is cut), so that no client holds a complete
// answer without its record.
type Recorder interface {
	Record(ev *Event) error
}

// An Admitter is a Recorder that can tell in advance that it cannot keep
// events, such as a spool at its size bound. The proxy calls Admit before it
// sends a request upstream and, on an error, answers 503 without running the
// inference: none runs without a place for its record.
type Admitter interface {
	Admit() error
}

// RetryAfter is implemented by Admit errors that know when the Recorder
// will next check whether it can take events again (a spool re-checks its
// disk on a timer): the honest Retry-After for the refused request.
type RetryAfter interface {
	RetryAfter() time.Duration
}

// NewID returns a random (version 4) UUID in its canonical text form.
func NewID() string {
	var buf [36]byte
	return string(AppendNewID(buf[:0]))
}

// AppendNewID appends a new random (version 4) UUID in its canonical text
// form (36 bytes) to dst, for callers that keep the text in storage of
// their own rather than in a string of its own.
func AppendNewID(dst []byte) []byte {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic("audit: crypto/rand failed: " + err.Error())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	dst = hex.AppendEncode(dst, u[0:4])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[4:6])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[6:8])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, u[8:10])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, u[10:])
}

// Timestamp is a time written as RFC 3339 in UTC with exactly nine fractional
// digits, so that events sort as strings in time order.
type Timestamp time.Time

const timestampLayout = "2006-01-02T15:04:05.000000000Z"

// MarshalJSON implements json.Marshaler.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(timestampLayout)+2)
	b = append(b, '"')
	b = time.Time(t).UTC().AppendFormat(b, timestampLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler. It accepts any RFC 3339 time.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return &time.ParseError{Layout: time.RFC3339Nano, Value: string(b), Message: ": event time is not a JSON string"}
	}
	v, err := time.Parse(time.RFC3339Nano, string(b[1:len(b)-1]))
	if err != nil {
		return err
	}
	*t = Timestamp(v)
	return nil
}
