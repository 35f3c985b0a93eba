package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// upstreamIdleConnDuration is how long an idle upstream connection is kept
// for reuse. It is below uvicorn's default keep-alive timeout (5 s), so the
// proxy drops an idle connection before vLLM does and never sends a request
// on one that vLLM is closing.
const upstreamIdleConnDuration = 4 * time.Second

func newUpstreamClient(up Upstream, cfg Config) *fasthttp.HostClient {
	idle := cfg.UpstreamIdleTimeout
	dial := cfg.Dial
	if dial == nil {
		dialer := &fasthttp.TCPDialer{Concurrency: 0, DNSCacheDuration: time.Minute}
		dial = func(addr string) (net.Conn, error) { return dialer.DialTimeout(addr, 10*time.Second) }
	}
	return &fasthttp.HostClient{
		Addr:  up.Addr,
		IsTLS: up.IsTLS,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dial(addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, readIdle: idle, writeIdle: idle}, nil
		},
		// Bodies are streamed both ways; see the package documentation.
		StreamResponseBody:        true,
		MaxConns:                  cfg.UpstreamMaxConns,
		MaxConnWaitTimeout:        5 * time.Second,
		MaxIdleConnDuration:       upstreamIdleConnDuration,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		ReadBufferSize:            4 << 10, // a vLLM header is a few hundred bytes; bodies are read through the tap
		MaxIdemponentCallAttempts: 2,
		// An upstream answer fasthttp cannot parse may hold a completion.
		SecureErrorLogMessage: true,
	}
}

// errClientGone ends an upstream exchange whose client went away before
// the answer began; see watch.go.
var errClientGone = errors.New("the client closed its connection before the answer began; upstream request cancelled")

// upstreamConn is the upstream side of one exchange: the pooled connection
// its request went out on, kept so that the request can be cancelled by
// closing it (vLLM aborts a generation whose connection closes), and
// released to the pool, or closed, once the answer's body is done with.
//
// fasthttp's HostClient.Do hides the connection, so the proxy makes its own
// round trip with the HostClient's pool (AcquireConn, ReleaseConn), as its
// default transport does.
type upstreamConn struct {
	mu        sync.Mutex
	conn      net.Conn // nil outside a round trip and after release
	release   func(discard bool)
	body      upstreamBody
	hasBody   bool
	cancelled bool // the client is gone: close conn, and do not retry
}

// upstreamBody is a response body as the tap reads it, noting whether it
// was read to its end: only then may its connection serve another request.
type upstreamBody struct {
	r         io.Reader
	fullyRead bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.fullyRead = true
	}
	return n, err
}

// reset readies u for the next exchange.
func (u *upstreamConn) reset() {
	u.mu.Lock()
	u.cancelled = false
	u.mu.Unlock()
}

// cancel closes the exchange's upstream connection, if it has one, and keeps
// it from getting one: the request in flight fails at once, and vLLM, seeing
// its connection close, aborts the generation.
func (u *upstreamConn) cancel() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cancelled = true
	if u.conn != nil {
		u.conn.Close()
	}
}

func (u *upstreamConn) isCancelled() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cancelled
}

// done releases the connection of a finished exchange: back to the pool if
// its body was read to the end, neither side asked to close it and it was
// not cancelled (closed), closed otherwise. resp must have been released
// first (it holds the body's reader).
func (u *upstreamConn) done(keepAlive bool) {
	u.mu.Lock()
	release, reuse := u.release, keepAlive && u.hasBody && u.body.fullyRead && !u.cancelled
	u.conn, u.release, u.body, u.hasBody = nil, nil, upstreamBody{}, false
	u.mu.Unlock()
	if release != nil {
		release(!reuse)
	}
}

// roundTrip sends req upstream on a connection of hc's pool and reads the
// response header into resp; the body is left to stream (resp.BodyStream).
//
// A request is sent once. A POST that reached vLLM may have started a
// generation, and a failure after the first byte was written says nothing
// about whether it did, so it is not sent again. What is safe is to avoid
// a pooled connection that the upstream closed while it was idle (uvicorn
// closes idle keep-alive connections after 5 s): before a request goes out
// on a reused connection, a non-blocking peek checks that the upstream has
// not closed it, and one it has is dropped for another (net/http does the
// same with its idle-connection reader). A write that failed before any byte
// was accepted is tried once more on a new connection.
//
// A streamed body (bigbody.go) is never written twice: the bytes a failed
// write took from the client are gone, and the write takes the stream off
// req, which would then go out again with no body.
//
// sent is called once the request is written: its body is no longer needed.
func (u *upstreamConn) roundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, sent func()) error {
	req.URI().DisablePathNormalizing = true
	streamed := req.IsBodyStream()
	for stale, rewrites := 0, 0; ; {
		outcome, err := u.try(hc, req, resp, sent)
		if err == nil {
			return nil
		}
		if u.isCancelled() {
			return errClientGone
		}
		switch {
		case outcome == closedWhileIdle && stale < 8:
			stale++
		case outcome == nothingWritten && rewrites < 1 && !streamed:
			rewrites++
		default:
			if errors.Is(err, io.EOF) {
				err = fasthttp.ErrConnectionClosed
			}
			return err
		}
	}
}

// tryOutcome says how far a failed try got, which decides whether the
// request may be sent again.
type tryOutcome int

const (
	sentOrUnknown   tryOutcome = iota // bytes of the request may have reached the upstream
	closedWhileIdle                   // a pooled connection the upstream had closed; nothing sent
	nothingWritten                    // the write failed before any byte was accepted
)

func (u *upstreamConn) try(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, sent func()) (tryOutcome, error) {
	resp.Reset()
	resp.StreamBody = true
	resp.SkipBody = req.Header.IsHead()
	cc, err := hc.AcquireConn(0, false)
	if err != nil {
		return sentOrUnknown, err
	}
	conn := cc.Conn()
	ic := upstreamIdleConn(conn)
	if ic != nil && ic.requests > 0 && ic.closedByPeer() {
		hc.CloseConn(cc)
		return closedWhileIdle, fasthttp.ErrConnectionClosed
	}
	u.mu.Lock()
	if u.cancelled {
		u.mu.Unlock()
		hc.CloseConn(cc)
		return sentOrUnknown, errClientGone
	}
	u.conn = conn
	u.mu.Unlock()
	closeConn := func() {
		u.mu.Lock()
		u.conn = nil
		u.mu.Unlock()
		hc.CloseConn(cc)
	}
	var written int64
	if ic != nil {
		ic.requests++
		written = ic.written
	}
	resp.ParseNetConn(conn)
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		closeConn()
		if ic != nil && ic.written == written {
			return nothingWritten, err
		}
		if sent != nil {
			sent()
		}
		return sentOrUnknown, err
	}
	if sent != nil {
		sent()
	}
	br := hc.AcquireReader(conn)
	if err := resp.ReadLimitBody(br, 0); err != nil {
		hc.ReleaseReader(br)
		closeConn()
		return sentOrUnknown, err
	}
	body := resp.BodyStream()
	if body == nil {
		// No body (HEAD, 204, 304): the connection is free again, unless
		// the exchange was cancelled, which closed it.
		hc.ReleaseReader(br)
		u.mu.Lock()
		u.conn = nil
		cancelled := u.cancelled
		u.mu.Unlock()
		if cancelled || resp.ConnectionClose() {
			hc.CloseConn(cc)
		} else {
			hc.ReleaseConn(cc)
		}
		return sentOrUnknown, nil
	}
	u.mu.Lock()
	u.body, u.hasBody = upstreamBody{r: body}, true
	u.release = func(discard bool) {
		hc.ReleaseReader(br)
		if discard {
			hc.CloseConn(cc)
		} else {
			hc.ReleaseConn(cc)
		}
	}
	u.mu.Unlock()
	return sentOrUnknown, nil
}

// upstreamIdleConn returns the idleConn under an upstream connection (under
// TLS too), or nil.
func upstreamIdleConn(c net.Conn) *idleConn {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	ic, _ := c.(*idleConn)
	return ic
}

// closedByPeer reports whether the peer has closed the connection (or reset
// it) while it was idle: a read without waiting finds the end of the stream.
// Bytes waiting to be read (an answer nobody asked for) make the connection
// unusable too.
func (c *idleConn) closedByPeer() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	// The idle deadline of the last read may have passed while the
	// connection waited in the pool; the next Read sets a new one.
	if c.Conn.SetReadDeadline(time.Time{}) != nil {
		return true
	}
	c.readSet = time.Time{}
	closed := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n > 0 || (err == nil && n == 0) ||
			(err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR))
		return true // never wait
	})
	return err != nil || closed
}

// isTimeout reports whether err is an idle timeout of an idleConn (or a
// fasthttp timeout).
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idleConn turns a connection's deadlines into idle timeouts: each Read or
// Write may block for at most its idle duration. Setting a deadline costs a
// runtime timer update, so it is refreshed only when a sixteenth of the idle
// duration has passed since it was last set: a stall is cut after between
// 15/16 and all of the idle duration.
type idleConn struct {
	net.Conn
	readIdle, writeIdle time.Duration
	readSet, writeSet   time.Time
	onClose             func() // called once, on the first Close
	closed              atomic.Bool
	// For upstream connections, used by the goroutine of the request in
	// flight: bytes written so far, and requests sent.
	written  int64
	requests int
}

func (c *idleConn) Close() error {
	if c.closed.CompareAndSwap(false, true) && c.onClose != nil {
		c.onClose()
	}
	return c.Conn.Close()
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.readIdle > 0 {
		if now := time.Now(); now.Sub(c.readSet) > c.readIdle/16 {
			if err := c.Conn.SetReadDeadline(now.Add(c.readIdle)); err != nil {
				return 0, err
			}
			c.readSet = now
		}
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.writeIdle > 0 {
		if now := time.Now(); now.Sub(c.writeSet) > c.writeIdle/16 {
			if err := c.Conn.SetWriteDeadline(now.Add(c.writeIdle)); err != nil {
				return 0, err
			}
			c.writeSet = now
		}
	}
	n, err := c.Conn.Write(p)
	c.written += int64(n)
	return n, err
}

// The Set*Deadline methods let fasthttp impose its own deadlines (keep-alive
// idle, request read timeout); the next Read or Write then sets the idle
// deadline afresh.

func (c *idleConn) SetDeadline(t time.Time) error {
	c.readSet, c.writeSet = time.Time{}, time.Time{}
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.readSet = time.Time{}
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.writeSet = time.Time{}
	return c.Conn.SetWriteDeadline(t)
}
