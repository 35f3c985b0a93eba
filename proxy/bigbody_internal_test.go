package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/auditproxy/auditproxy/hashing"
)

// newStreamedBody is a streamed body of an exchange of its own: prefix,
// then rest, with the limit (left) and the announced length (due) of
// streamBody.
func newStreamedBody(prefix []byte, rest io.Reader, left, due int64) *streamedBody {
	x := &exchange{p: &Proxy{budget: &bodyBudget{limit: 1 << 30}}, in: hashing.NewHasher(hashing.BLAKE3)}
	pooled := make([]byte, 0, smallBodySize)
	x.pooledBody = &pooled
	x.sbody = streamedBody{x: x, prefix: prefix, rest: rest, piece: pooled[:cap(pooled)], left: left, due: due,
		fields: getStreamFields([]byte("application/json")), req: &fasthttp.Request{}}
	return &x.sbody
}

// TestStreamedBodyReadAndWriteTo: the body fasthttp writes with WriteTo,
// or reads with Read, is the prefix and the rest, hashed and read for its
// fields as it goes; one shorter than announced, or longer than the limit,
// ends with the client's fault.
func TestStreamedBodyReadAndWriteTo(t *testing.T) {
	body := []byte(`{"model":"a","messages":[{"content":"` + strings.Repeat("x", 300<<10) + `"}],"stream":true,"model":"b"}`)
	want := hashing.Sum256(hashing.BLAKE3, body)
	for _, viaRead := range []bool{false, true} {
		b := newStreamedBody(body[:1000], bytes.NewReader(body[1000:]), -1, int64(len(body)-1000))
		var out bytes.Buffer
		var err error
		if viaRead {
			_, err = io.Copy(&out, struct{ io.Reader }{b})
		} else {
			_, err = b.WriteTo(&out)
		}
		f := b.fields.finish(true)
		if err != nil || !bytes.Equal(out.Bytes(), body) || !b.eof || b.clientErr != nil {
			t.Fatalf("read %v: %d bytes, eof %v, err %v", viaRead, out.Len(), b.eof, err)
		}
		if got := b.x.in.AppendDigest(nil); string(got) != string(hashing.AppendDigest(nil, hashing.BLAKE3, want[:])) || b.x.in.Bytes() != int64(len(body)) {
			t.Errorf("read %v: input %s/%d", viaRead, got, b.x.in.Bytes())
		}
		if f.model != "b" || !f.stream || !f.valid {
			t.Errorf("read %v: fields %+v", viaRead, f)
		}
	}

	short := newStreamedBody(nil, bytes.NewReader(body[:5000]), -1, int64(len(body)))
	if _, err := short.WriteTo(io.Discard); !errors.Is(err, io.ErrUnexpectedEOF) || short.clientErr == nil || short.eof {
		t.Errorf("a body shorter than announced: %v (client's fault: %v)", err, short.clientErr)
	}
	if short.x.in.Bytes() != 5000 {
		t.Errorf("a body shorter than announced: %d bytes hashed, want the 5000 sent", short.x.in.Bytes())
	}
	long := newStreamedBody(body[:100], bytes.NewReader(body[100:]), 200<<10, -1)
	if _, err := long.WriteTo(io.Discard); !errors.Is(err, errBodyOverLimit) || long.x.in.Bytes() > 100+200<<10 {
		t.Errorf("a chunked body past the limit: %v, %d bytes sent", err, long.x.in.Bytes())
	}
	exact := newStreamedBody(nil, bytes.NewReader(body), int64(len(body)), -1)
	if _, err := exact.WriteTo(io.Discard); err != nil || exact.x.in.Bytes() != int64(len(body)) {
		t.Errorf("a chunked body just at the limit: %v, %d bytes", err, exact.x.in.Bytes())
	}
}
