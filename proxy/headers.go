package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// hopByHopHeaders are meaningful for one connection only and are not
// forwarded (RFC 9110 section 7.6.1, plus the non-standard Keep-Alive and
// Proxy-Connection that clients still send). Transfer-Encoding and the
// connection's keep-alive state are framing, which fasthttp sets on each side
// itself.
var hopByHopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"TE",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

const requestIDHeader = "X-Request-Id"

// prepareUpstreamRequest turns the client's request, in place, into the one
// sent upstream: the client's request line and headers, less hop-by-hop
// headers and the fields of a chunked body's trailer section, plus
// X-Request-Id. It returns whether the client asked to close its
// connection, which restoreClientRequest puts back for the server.
//
// fasthttp would otherwise add what the client did not send: a default
// Content-Type (application/octet-stream) to a body without one, and the
// trailer fields as headers (fasthttp moves them into the header section
// when the Trailer header is deleted). Trailer fields are dropped, as nginx
// does: the body goes upstream with a Content-Length. A request without a
// host (HTTP/1.0 allows it) gets the upstream's address; fasthttp refuses to
// send a request without one.
func prepareUpstreamRequest(req *fasthttp.Request, requestID, upstreamHost string) (clientClose bool) {
	h := &req.Header
	clientClose = h.ConnectionClose()
	h.SetNoDefaultContentType(true)
	if len(req.URI().Host()) == 0 {
		// Request.Write takes the Host header from the URI.
		req.URI().SetHost(upstreamHost)
	}
	var trailers [][]byte
	for name := range h.Trailers() {
		trailers = append(trailers, bytes.Clone(name))
	}
	for _, name := range trailers {
		h.DelBytes(name)
	}
	removeConnectionTokens(h.Peek("Connection"), h.Del)
	for _, name := range hopByHopHeaders {
		h.Del(name)
	}
	// The proxy has read the whole body already; the upstream must not wait
	// for a go-ahead that nobody will send.
	h.Del("Expect")
	h.ResetConnectionClose()
	h.Set(requestIDHeader, requestID)
	return clientClose
}

func restoreClientRequest(h *fasthttp.RequestHeader, clientClose bool) {
	if clientClose {
		h.SetConnectionClose()
	}
}

// requestPath returns the path of the request's target as the client sent
// it and the upstream receives it: not normalized (fasthttp's Path resolves
// "..", collapses "//" and decodes "%2F"), without the query.
func requestPath(req *fasthttp.Request) []byte {
	if p := req.URI().PathOriginal(); len(p) > 0 {
		return p
	}
	return []byte("/")
}

// copyResponseHeader copies the upstream's status and headers to the
// client's response, without hop-by-hop headers.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader, requestID string) {
	src.CopyTo(dst)
	removeConnectionTokens(src.Peek("Connection"), dst.Del)
	for _, name := range hopByHopHeaders {
		dst.Del(name)
	}
	dst.ResetConnectionClose()
	dst.Set(requestIDHeader, requestID)
}

// removeConnectionTokens deletes the headers that a Connection header value
// lists as hop-by-hop ("Connection: keep-alive, X-Foo").
func removeConnectionTokens(value []byte, del func(string)) {
	for len(value) > 0 {
		var tok []byte
		if i := bytes.IndexByte(value, ','); i >= 0 {
			tok, value = value[:i], value[i+1:]
		} else {
			tok, value = value, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) {
			continue
		}
		del(string(tok))
	}
}
