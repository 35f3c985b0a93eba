package proxy

import (
	"fmt"
	"io"

	"github.com/auditproxy/auditproxy/hashing"
)

// A request body larger than the proxy holds (bodyHold: 8 MiB, or one
// byte more than payload capture keeps) is streamed to vLLM, which puts no
// limit on a body (a multimodal request with base64 images is often tens
// of megabytes): the proxy reads its first bodyHold bytes as it reads any
// body (within the budget), then sends them and the rest as the rest
// arrives, hashing every byte on the way. Memory per body stays at
// bodyHold whatever its length.
//
// Such a body is not read for its fields and never rewritten: the event
// takes the model from vLLM's answer (model.from_answer) and the stream
// flag from the answer's Content-Type, and a streamed answer whose client
// did not ask for usage has no token counts. Capture, when on, keeps the
// body's first --capture-max-bytes, as for any body, marked truncated.
const streamedBodyMin = 8 << 20

// streamedBody is a streamed request body as the upstream write reads it:
// the bytes already read, then the rest from the client, each byte hashed
// into in as it is handed to the write.
type streamedBody struct {
	prefix []byte
	rest   io.Reader
	in     *hashing.Hasher
	// left bounds what the rest may add (the proxy's body size limit);
	// -1: no limit. due is what the rest must add (the announced length);
	// -1: chunked.
	left, due int64
	// clientErr is why the client's body ended early or went too long: the
	// upstream write fails with it, and the event says the client's body
	// was at fault, not the upstream.
	clientErr error
}

// errStreamedBodyOverLimit ends a chunked body that grew past
// --max-request-body-size after it began streaming; the upstream sees a
// cut request, which vLLM does not act on, and the client a 413.
var errStreamedBodyOverLimit = fmt.Errorf("streamed: %w", errBodyOverLimit)

func (b *streamedBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		b.in.Write(p[:n])
		return n, nil
	}
	if b.left == 0 {
		// A byte more would pass the limit: see whether one comes.
		var one [1]byte
		if n, err := b.rest.Read(one[:]); n > 0 {
			b.clientErr = errStreamedBodyOverLimit
			return 0, b.clientErr
		} else if err != nil {
			return 0, err
		}
		return 0, nil
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rest.Read(p)
	b.in.Write(p[:n])
	if b.left > 0 {
		b.left -= int64(n)
	}
	if b.due >= 0 {
		b.due -= int64(n)
	}
	switch {
	case err == io.EOF && b.due > 0:
		b.clientErr = io.ErrUnexpectedEOF // shorter than its Content-Length
		return n, b.clientErr
	case err != nil && err != io.EOF:
		b.clientErr = err
	}
	return n, err
}
