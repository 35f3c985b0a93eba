// Command bareproxy is a bare fasthttp reverse proxy: the floor for a Go
// proxy on fasthttp, measured beside auditproxy by the load harness
// (bench/harness, peer "fasthttp") so that the cost of auditing shows apart
// from the cost of proxying.
//
//	bareproxy -listen 127.0.0.1:8081 -upstream http://127.0.0.1:8000
//
// It proxies as auditproxy does (proxy/proxy.go, proxy/transport.go,
// proxy/handler.go), with the same fasthttp server and client settings, the
// same hop-by-hop header handling and the same choice between buffering and
// streaming an answer: a body of known length up to 64 KiB that is not an
// SSE stream is read whole and written in one go; any other (SSE, chunked,
// larger) is streamed, each piece flushed to the client as it arrives. What
// it leaves out is everything auditproxy does for the audit: no request id,
// no hashing, no events, no log, no usage rewrite. Request and answer
// bodies pass unchanged.
//
// It serves until it is killed.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/valyala/fasthttp"
)

// These are auditproxy's defaults (proxy.Config, proxy/handler.go).
const (
	clientIdle        = 2 * time.Minute
	upstreamIdle      = 10 * time.Minute
	bufferedBodyLimit = 64 << 10
)

// hopByHop are the headers not forwarded either way (proxy/headers.go).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade"}

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	upstream := flag.String("upstream", "", "upstream base URL, http://host:port")
	version := flag.Bool("v", false, "print a version line and exit")
	flag.Parse()
	if *version {
		v := "(version unknown)"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, d := range bi.Deps {
				if d.Path == "github.com/valyala/fasthttp" {
					v = d.Version
				}
			}
		}
		fmt.Printf("bareproxy on fasthttp %s, %s\n", v, runtime.Version())
		return
	}
	u, err := url.Parse(*upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" || flag.NArg() > 0 {
		log.Fatalf("bareproxy: want -upstream http://host:port and no arguments (got -upstream %q %q)", *upstream, flag.Args())
	}
	dialer := &fasthttp.TCPDialer{DNSCacheDuration: time.Minute}
	client := &fasthttp.HostClient{
		Addr: u.Host,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.DialTimeout(addr, 10*time.Second)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, readIdle: upstreamIdle, writeIdle: upstreamIdle}, nil
		},
		StreamResponseBody:        true,
		MaxConns:                  4096,
		MaxConnWaitTimeout:        5 * time.Second,
		MaxIdleConnDuration:       4 * time.Second, // below uvicorn's 5 s keep-alive
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		ReadBufferSize:            4 << 10,
		MaxIdemponentCallAttempts: 2,
		SecureErrorLogMessage:     true,
	}
	srv := &fasthttp.Server{
		Handler:                      func(ctx *fasthttp.RequestCtx) { handle(ctx, client) },
		MaxRequestBodySize:           64 << 20, // as the nginx peer's client_max_body_size
		ReadTimeout:                  clientIdle,
		IdleTimeout:                  clientIdle,
		NoDefaultServerHeader:        true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		ReduceMemoryUsage:            true,
		SecureErrorLogMessage:        true,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("bareproxy: %v", err)
	}
	fmt.Println("bareproxy listening on http://" + ln.Addr().String())
	log.Fatal(srv.Serve(&clientListener{ln}))
}

func handle(ctx *fasthttp.RequestCtx, client *fasthttp.HostClient) {
	req := &ctx.Request
	clientClose := req.Header.ConnectionClose()
	req.Header.SetNoDefaultContentType(true)
	dropHopByHop(req.Header.Peek("Connection"), req.Header.Del)
	req.Header.Del("Expect") // the body has been read already
	req.Header.ResetConnectionClose()
	if len(req.URI().Host()) == 0 {
		req.URI().SetHost(client.Addr)
	}
	resp := fasthttp.AcquireResponse()
	err := client.Do(req, resp)
	if clientClose {
		req.Header.SetConnectionClose() // so that the server closes after answering
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		ctx.Error("bareproxy: upstream: "+err.Error(), fasthttp.StatusBadGateway)
		return
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	dropHopByHop(resp.Header.Peek("Connection"), ctx.Response.Header.Del)
	ctx.Response.Header.ResetConnectionClose()
	body := resp.BodyStream()
	if body == nil { // HEAD, 204, 304
		fasthttp.ReleaseResponse(resp)
		return
	}
	size := resp.Header.ContentLength()
	sse := bytes.HasPrefix(resp.Header.ContentType(), []byte("text/event-stream"))
	if size >= 0 && size <= bufferedBodyLimit && !sse {
		err := resp.BodyWriteTo(ctx.Response.BodyWriter())
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			ctx.Error("bareproxy: upstream body: "+err.Error(), fasthttp.StatusBadGateway)
		}
		return
	}
	if size < 0 {
		// Unknown length: fasthttp writes the stream chunked, flushing each
		// piece read from the upstream, so SSE events pass one by one.
		size = -1
	}
	ctx.Response.SetBodyStream(&streamedBody{resp: resp, body: body}, size)
}

// dropHopByHop deletes the hop-by-hop headers and those a Connection value
// names ("Connection: keep-alive, X-Foo").
func dropHopByHop(connection []byte, del func(string)) {
	for tok := range bytes.SplitSeq(connection, []byte(",")) {
		if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, []byte("close")) && !bytes.EqualFold(tok, []byte("keep-alive")) {
			del(string(tok))
		}
	}
	for _, name := range hopByHop {
		del(name)
	}
}

// streamedBody is a streamed answer; once the server has written it (or
// failed to), the upstream response is released, and its connection reused
// only if the body was read to its end.
type streamedBody struct {
	resp *fasthttp.Response
	body io.Reader
}

func (b *streamedBody) Read(p []byte) (int, error) { return b.body.Read(p) }

func (b *streamedBody) CloseWithError(err error) error {
	if c, ok := b.body.(fasthttp.ReadCloserWithError); ok {
		c.CloseWithError(err)
	}
	fasthttp.ReleaseResponse(b.resp)
	return nil
}

// clientListener gives client connections the idle write timeout
// auditproxy's have (proxy/listener.go); reads are bounded by the server's
// ReadTimeout and IdleTimeout.
type clientListener struct{ net.Listener }

func (l *clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idleConn{Conn: c, writeIdle: clientIdle}, nil
}

// idleConn fails a Read or Write that makes no progress for its idle time
// (0: no limit), moving the deadline only once a sixteenth of it has
// passed, as auditproxy's (proxy/transport.go) does: a proxy has to bound
// stalls, and this is what auditproxy pays for it. With the timeouts set
// here fasthttp sets no read deadline on upstream connections and no write
// deadline on client ones, so this one is never overridden.
type idleConn struct {
	net.Conn
	readIdle, writeIdle time.Duration
	readSet, writeSet   time.Time
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := refresh(c.readIdle, &c.readSet, c.Conn.SetReadDeadline); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := refresh(c.writeIdle, &c.writeSet, c.Conn.SetWriteDeadline); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func refresh(idle time.Duration, set *time.Time, setDeadline func(time.Time) error) error {
	if idle <= 0 {
		return nil
	}
	if now := time.Now(); now.Sub(*set) > idle/16 {
		*set = now
		return setDeadline(now.Add(idle))
	}
	return nil
}
