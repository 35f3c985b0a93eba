package proxy

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
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
		RetryIfErr:            retryUnansweredRequest,
	}
}

// retryUnansweredRequest retries a request once when the upstream closed a
// reused keep-alive connection before answering a single byte: the request
// never reached a model. Anything else is not retried, since a POST may have
// started a generation.
func retryUnansweredRequest(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts < 2 && errors.Is(err, fasthttp.ErrConnectionClosed)
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
	return c.Conn.Write(p)
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
