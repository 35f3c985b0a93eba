package proxy

import (
	"errors"
	"io"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// Request bodies are read by the proxy, not by fasthttp before the handler
// (Server.StreamRequestBody), so that the memory they hold is bounded: every
// body, from its first byte until its request has been written upstream,
// holds a share of one budget (Config.RequestBodyBudget), taken as its
// bytes arrive (its buffer grows by doubling, up to the announced length).
// A request whose body does not fit is answered 503
// request_bodies_over_budget, with Retry-After, without being read or sent
// upstream: twenty slow 31 MB uploads no longer take 600 MB.
//
// The streamed request rewritten for include_usage holds a second copy, and
// a body in UTF-16 or UTF-32 a UTF-8 copy while it is read: each takes a
// share too. A body longer than the proxy holds (8 MiB) is not held: it is
// streamed upstream through a 64 KiB piece buffer, which holds the share
// (bigbody.go), so the budget bounds the number of bodies held whole, not
// the length of any body.

// DefaultRequestBodyBudget is the budget when none is configured: a quarter
// of the Go memory limit when one is set (GOMEMLIMIT), else 256 MiB.
func DefaultRequestBodyBudget() int64 {
	if limit := debug.SetMemoryLimit(-1); limit > 0 && limit < math.MaxInt64 {
		return max(limit/4, 32<<20)
	}
	return 256 << 20
}

// bodyBudget counts the bytes of request bodies in flight against a limit.
type bodyBudget struct {
	limit int64
	used  atomic.Int64
}

// take reserves n bytes, or reports false if they do not fit.
func (b *bodyBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (b *bodyBudget) give(n int64) { b.used.Add(-n) }

// errBodyOverBudget and errBodyOverLimit end the reading of a body.
var (
	errBodyOverBudget = errors.New("request bodies in flight are at the proxy's budget")
	errBodyOverLimit  = errors.New("request body exceeds the proxy's limit")
)

// bodyPools lend buffers for the bodies of most requests, in three sizes:
// a body of announced length takes the smallest that holds it, so that a
// 1 KiB chat request holds 4 KiB, not 64 (at 2,000 streams starting at
// once, 64 KiB each was 50 MB of the peak heap); a chunked body, and the
// piece buffer of a streamed one (bigbody.go), take the largest. Larger
// bodies get buffers of their own, left to the garbage collector, so that
// the pools never keep megabytes.
var bodyPools = [len(bodyPoolSizes)]sync.Pool{
	{New: func() any { b := make([]byte, 0, bodyPoolSizes[0]); return &b }},
	{New: func() any { b := make([]byte, 0, bodyPoolSizes[1]); return &b }},
	{New: func() any { b := make([]byte, 0, bodyPoolSizes[2]); return &b }},
}

var bodyPoolSizes = [3]int{4 << 10, 16 << 10, smallBodySize}

const (
	smallBodySize = 64 << 10
)

// getBodyBuffer lends a pooled buffer of at least size bytes (of the
// largest size when size is over it).
func getBodyBuffer(size int64) *[]byte {
	for i, n := range bodyPoolSizes {
		if size <= int64(n) || i == len(bodyPoolSizes)-1 {
			return bodyPools[i].Get().(*[]byte)
		}
	}
	panic("unreachable")
}

// putBodyBuffer returns a buffer getBodyBuffer lent to its pool.
func putBodyBuffer(b *[]byte) {
	*b = (*b)[:0]
	for i, n := range bodyPoolSizes {
		if cap(*b) == n {
			bodyPools[i].Put(b)
			return
		}
	}
}

// readBody reads the request body into a buffer of x's and makes it the
// request's body. The buffer grows as bytes arrive, and takes its share of
// the budget as it grows: a client that announces 8 MiB and sends 8 KiB
// holds 64 KiB, not 8 MiB. The share is held until releaseBody. A body
// longer than the proxy holds becomes a stream instead (streamBody); what
// was read of it, if anything, goes first.
func (p *Proxy) readBody(ctx *fasthttp.RequestCtx, x *exchange) ([]byte, error) {
	req := &ctx.Request
	if !req.IsBodyStream() {
		// Served without StreamRequestBody (tests give the handler to a
		// server of their own): fasthttp has read the body.
		return req.Body(), nil
	}
	stream := ctx.RequestBodyStream()
	limit := int64(p.cfg.MaxRequestBodySize) // 0: none
	n := int64(req.Header.ContentLength())
	if limit > 0 && n > limit {
		return nil, errBodyOverLimit
	}
	// size is where the buffer stops growing: the announced length, or for
	// a chunked body one byte past the limit, to see that it is over. A
	// body longer than the proxy holds (hold) is streamed (bigbody.go):
	// one announced so is read no further than payload capture needs, a
	// chunked one is read one byte past hold, to see that it is longer.
	hold := p.bodyHold
	var size int64
	switch {
	case n > hold:
		if p.cfg.Capture != nil {
			size = p.cfg.Capture.MaxBytes + 1
		}
	case n >= 0:
		size = n
	case limit > 0 && limit < hold:
		size = limit + 1
	default:
		size = hold + 1
	}
	if n >= 0 && n <= hold {
		x.pooledBody = getBodyBuffer(n)
	} else {
		// Chunked, or streamed: the piece buffer is the largest.
		x.pooledBody = getBodyBuffer(smallBodySize)
	}
	buf := (*x.pooledBody)[:0]
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			grown := min(max(2*int64(cap(buf)), smallBodySize), size)
			if !p.budget.take(grown - x.bodyShare) {
				return nil, errBodyOverBudget
			}
			x.bodyShare = grown
			buf = append(make([]byte, 0, grown), buf...)
		} else if x.bodyShare < int64(cap(buf)) {
			// The pooled buffer: its share is taken before it is filled.
			if !p.budget.take(int64(cap(buf)) - x.bodyShare) {
				return nil, errBodyOverBudget
			}
			x.bodyShare = int64(cap(buf))
		}
		m, err := stream.Read(buf[len(buf):min(int64(cap(buf)), size)])
		buf = buf[:len(buf)+m]
		x.body = buf
		if err == io.EOF {
			if n >= 0 && int64(len(buf)) < min(n, size) {
				return nil, io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if limit > 0 && int64(len(buf)) > limit {
		return nil, errBodyOverLimit
	}
	if n > hold || int64(len(buf)) > hold {
		// Longer than the proxy holds: stream it (bigbody.go).
		x.body = buf
		return buf, p.streamBody(ctx, x, stream, buf, n, limit)
	}
	req.SetBodyRaw(buf)
	return buf, nil
}

// releaseBody lets go of the request body once it has been sent upstream (or
// will not be): its buffer and its share of the budget. The request no
// longer refers to it.
func (p *Proxy) releaseBody(ctx *fasthttp.RequestCtx, x *exchange) {
	if x.body == nil && x.bodyShare == 0 && x.pooledBody == nil && cap(x.reqBody) <= smallBodySize {
		return
	}
	if ctx != nil {
		ctx.Request.ResetBody()
	}
	if x.bodyShare > 0 {
		p.budget.give(x.bodyShare)
	}
	if x.pooledBody != nil {
		putBodyBuffer(x.pooledBody)
		x.pooledBody = nil
	}
	x.body, x.bodyShare = nil, 0
	// The rewritten copy went upstream too; a long stream must not hold it.
	x.reqBody = x.reqBody[:0]
	if cap(x.reqBody) > smallBodySize {
		x.reqBody = nil
	}
}
