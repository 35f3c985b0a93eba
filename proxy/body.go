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
// holds a share of one budget (Config.RequestBodyBudget). A body of known
// length takes its share before it is read; a chunked one takes it as it
// arrives. A request whose body does not fit is answered 503
// request_bodies_over_budget, with Retry-After, without being read or sent
// upstream: twenty slow 31 MB uploads no longer take 600 MB.
//
// The streamed request rewritten for include_usage holds a second copy, and
// takes a second share.

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

// smallBodies lends buffers for the bodies of most requests; larger bodies
// get buffers of their own, left to the garbage collector, so that the pool
// never keeps megabytes.
var smallBodies = sync.Pool{New: func() any { b := make([]byte, 0, smallBodySize); return &b }}

const (
	smallBodySize = 64 << 10
	// chunkedShare is how much budget a chunked body takes at a time.
	chunkedShare = 64 << 10
)

// readBody reads the request body into a buffer of x's, holding its share
// of the budget until releaseBody, and makes it the request's body.
func (p *Proxy) readBody(ctx *fasthttp.RequestCtx, x *exchange) ([]byte, error) {
	req := &ctx.Request
	if !req.IsBodyStream() {
		// Served without StreamRequestBody (tests give the handler to a
		// server of their own): fasthttp has read the body.
		return req.Body(), nil
	}
	stream := ctx.RequestBodyStream()
	max := int64(p.cfg.MaxRequestBodySize)
	n := int64(req.Header.ContentLength())
	switch {
	case n > max:
		return nil, errBodyOverLimit
	case n >= 0:
		if !p.budget.take(n) {
			return nil, errBodyOverBudget
		}
		x.bodyShare = n
		buf := x.bodyBuffer(int(n))
		if _, err := io.ReadFull(stream, buf); err != nil {
			return nil, err
		}
		x.body = buf
	default: // chunked
		buf := x.bodyBuffer(0)
		for {
			if int64(len(buf)) == x.bodyShare {
				if !p.budget.take(chunkedShare) {
					return nil, errBodyOverBudget
				}
				x.bodyShare += chunkedShare
			}
			if len(buf) == cap(buf) {
				buf = append(buf, make([]byte, min(cap(buf), 4<<20)+4096)...)[:len(buf)]
			}
			room := min(int64(cap(buf)), x.bodyShare, max+1)
			m, err := stream.Read(buf[len(buf):room])
			buf = buf[:len(buf)+m]
			x.body = buf
			if int64(len(buf)) > max {
				return nil, errBodyOverLimit
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
	}
	req.SetBodyRaw(x.body)
	return x.body, nil
}

// bodyBuffer returns a buffer of length n for a body.
func (x *exchange) bodyBuffer(n int) []byte {
	if n <= smallBodySize {
		x.pooledBody = smallBodies.Get().(*[]byte)
		return (*x.pooledBody)[:n]
	}
	return make([]byte, n)
}

// releaseBody lets go of the request body once it has been sent upstream (or
// will not be): its buffer and its share of the budget. The request no
// longer refers to it.
func (p *Proxy) releaseBody(ctx *fasthttp.RequestCtx, x *exchange) {
	if x.body == nil && x.bodyShare == 0 && x.pooledBody == nil {
		return
	}
	if ctx != nil {
		ctx.Request.ResetBody()
	}
	if x.bodyShare > 0 {
		p.budget.give(x.bodyShare)
	}
	if x.pooledBody != nil {
		*x.pooledBody = (*x.pooledBody)[:0]
		smallBodies.Put(x.pooledBody)
		x.pooledBody = nil
	}
	x.body, x.bodyShare = nil, 0
}
